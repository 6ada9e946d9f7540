"""PDU: the Lagrangian against a position-by-position recomputation (OpenUnlearning ``pdu.py`` since its PR #147: the
mean over the positions whose (unshifted) label is an answer token of (max logit - mean logit)^2, plus
lambda * (retain NLL - eps),
arXiv:2506.05314), the dual ascent on lambda (rises while the retain loss is above eps, never below 0, not during
the warm-up epochs), and a resumed run equal to an uninterrupted one (lambda is saved with each checkpoint)."""

import json

import naive_reference as naive
from resume_harness import straight_and_resumed
import pytest
import torch

from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import get_method
from unlearnkit.methods.pdu import flattening_loss
from unlearnkit.training import TrainConfig
from unlearnkit.training.checkpoint import (
    METHOD_STATE_FILE,
    load_checkpoint,
    save_checkpoint,
)


def naive_flattening(model):
    """Mean over every forget example, one at a time, and every position t whose label is an answer token (the
    unshifted mask, as the reference) of (max - mean of the logits at t)^2."""
    values = [(max(z) - sum(z) / len(z)) ** 2 for ids, labels in naive.forget_examples()
              for z, label in zip(naive.position_logits(model, ids), labels) if label != -100]
    return sum(values) / len(values)


def prepared(model, **params):
    method = get_method("pdu", **params)
    method.prepare(model, [naive.forget_batch([0, 1]), naive.forget_batch([2])])
    return method


def test_pdu_loss_matches_position_by_position():
    model = naive.memorised()
    method = prepared(model, retain_loss_eps=0.3, retain_weight=2.0, forget_weight=0.5)
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    retain = naive.mean_nll(model, naive.retain_examples())
    want = 0.5 * naive_flattening(model) + 2.0 * (retain - 0.3)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert logs["retain_loss"] == pytest.approx(retain, abs=1e-5) and logs["dual"] == 2.0


def test_flattening_loss_is_zero_only_for_uniform_logits():
    labels = torch.tensor([[-100, 5, 6], [-100, -100, 4]])
    assert flattening_loss(torch.full((2, 3, 7), 1.5), labels).item() == 0.0
    logits = torch.zeros(2, 3, 3)
    logits[0, 1] = torch.tensor([0.0, 0.0, 3.0])  # (3 - 1)^2 = 4 at an answer position
    logits[1, 0] = torch.tensor([0.0, 0.0, 30.0])  # a prompt position: not counted
    assert flattening_loss(logits, labels).item() == pytest.approx(4.0 / 3)


def test_dual_rises_while_the_retain_loss_is_above_eps_and_stops_at_zero():
    model = naive.memorised()
    retain = naive.mean_nll(model, naive.retain_examples())
    violated = prepared(model, retain_loss_eps=retain - 1.0, dual_step_size=0.5, dual_warmup_epochs=0)
    duals = []
    for _ in range(3):
        _, logs = violated.loss(model, naive.forget_batch(), naive.retain_batch())
        duals.append(logs["dual"])  # the lambda this call used
    assert duals == pytest.approx([1.0, 1.5, 2.0], abs=1e-5)  # + 0.5 * (retain - eps) = + 0.5 each call
    assert violated.state_dict()["dual"] == pytest.approx(2.5, abs=1e-5)

    satisfied = prepared(model, retain_loss_eps=retain + 0.4, dual_step_size=1.0, dual_warmup_epochs=0)
    lambdas = [satisfied.loss(model, naive.forget_batch(), naive.retain_batch())[1]["dual"] for _ in range(4)]
    assert lambdas == pytest.approx([1.0, 0.6, 0.2, 0.0], abs=1e-5)  # falls by 0.4 per call, projected at 0

    fixed = prepared(model, retain_loss_eps=0.0, primal_dual=False, dual_warmup_epochs=0)
    for _ in range(2):
        fixed.loss(model, naive.forget_batch(), naive.retain_batch())
    assert fixed.state_dict()["dual"] == 1.0


def test_dual_waits_for_the_warmup_epochs():
    model = naive.memorised()
    method = prepared(model, retain_loss_eps=0.0, dual_warmup_epochs=1)  # 3 forget examples: one epoch = 3 seen
    seen_duals = []
    for rows in ([0, 1], [2], [1, 0], [2]):
        method.loss(model, naive.forget_batch(rows), naive.retain_batch())
        seen_duals.append(method.state_dict()["dual"])
    assert seen_duals[:2] == [1.0, 1.0]  # the first epoch: no update
    assert 1.0 < seen_duals[2] < seen_duals[3]  # from the second epoch on: it rises (eps = 0 is violated)


def test_eps_has_no_default():
    with pytest.raises(UnlearnkitError) as err:
        get_method("pdu")
    assert "\n" not in str(err.value)
    assert "retain_loss_eps: must be given" in str(err.value)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    params = {"retain_loss_eps": 0.5, "dual_warmup_epochs": 1, "dual_step_size": 0.5}
    # 3 examples, 2 per step: 2 steps per epoch, 3 epochs; lambda moves from epoch 2 on
    config = TrainConfig(epochs=3, batch_size=2, learning_rate=1e-2, warmup_steps=0, seed=3)

    def dual_saved(folder):  # call 5 is the first step of epoch 3, after checkpoint epoch-2
        saved = json.loads((folder / "checkpoints" / "epoch-2" / "method_state.json").read_text())
        assert saved["values"]["examples_seen"] == 6 and saved["values"]["dual"] > 1.0

    full, straight, result, resumed = straight_and_resumed("pdu", params, config, 5, tmp_path, after_stop=dual_saved)
    assert [r["dual"] for r in result.logs] == [r["dual"] for r in full.logs]
    assert [r["loss"] for r in result.logs] == [r["loss"] for r in full.logs]
    for a, b in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_without_the_dual_variable_is_refused(tmp_path):
    model = naive.tiny_llama()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    method = prepared(model, retain_loss_eps=0.5)
    method.load_state_dict({"dual": 3.5, "examples_seen": 7})
    folder = save_checkpoint(tmp_path, "step-1", model, optimizer, {"step": 1}, method=method)
    fresh = prepared(model, retain_loss_eps=0.5)
    load_checkpoint(folder, model, optimizer, fresh)
    assert fresh.state_dict() == {"dual": 3.5, "examples_seen": 7}
    (folder / METHOD_STATE_FILE).unlink()
    with pytest.raises(UnlearnkitError, match="holds no state of method 'pdu'"):
        load_checkpoint(folder, model, optimizer, prepared(model, retain_loss_eps=0.5))


def test_a_config_without_eps_stops_at_load():
    from unlearnkit.config import parse_config

    with pytest.raises(UnlearnkitError) as err:
        parse_config({"method": {"name": "pdu"}}, where="run.yaml")
    assert str(err.value).startswith("run.yaml: method.params.retain_loss_eps: must be given")
    assert parse_config({"method": {"name": "pdu", "params": {"retain_loss_eps": 2.5}}}).method.params == \
        {"retain_loss_eps": 2.5}
