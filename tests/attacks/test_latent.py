"""The latent perturbation probe on tiny Llamas: the projection and step on hand vectors, the hook's exact addition,
the objective against a naive one-example-at-a-time computation, monotonicity in ε, the norm bound, restoration of
the model, argument errors and a real recovery on the unlearned model."""

from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.attacks import latent
from unlearnkit.attacks.latent import (LatentProbeResult, ResidualShift, latent_probe, normalised_step, project_l2,
                                       residual_hook, residual_norm)
from unlearnkit.errors import UnlearnkitError

from conftest import FORGET, RETAIN

EPSILONS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


def naive_nll(model, formatter, example, layer=None, delta=None):
    """Mean answer NLL of one example run alone, with ``delta`` added at every position of block ``layer``'s output
    by a hook written here (independent of the module's hook)."""
    enc = formatter.encode(example.question, example.answer)
    handle = None
    if delta is not None:
        def add(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            shifted = hidden + delta.to(hidden.dtype)
            return (shifted, *output[1:]) if isinstance(output, tuple) else shifted
        handle = model.model.layers[layer].register_forward_hook(add)
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0].double()
    finally:
        if handle is not None:
            handle.remove()
    logprobs = torch.log_softmax(logits, dim=-1)
    nlls = [-float(logprobs[t - 1, enc.input_ids[t]]) for t in range(enc.prompt_length, len(enc.input_ids))]
    return math.fsum(nlls) / len(nlls)


def test_project_l2_on_hand_vectors():
    rows = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [-6.0, 8.0]])
    projected = project_l2(rows, 1.0)
    expected = torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0], [-0.6, 0.8]])
    assert torch.allclose(projected, expected, atol=1e-7)
    assert torch.equal(project_l2(rows, 0.0), torch.zeros_like(rows))
    assert torch.equal(project_l2(rows, 10.0), rows)  # all inside the ball: unchanged


def test_normalised_step_on_hand_vectors():
    delta = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
    grad = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    stepped = normalised_step(delta, grad, 0.5)
    assert torch.allclose(stepped, torch.tensor([[1.0, -0.5], [2.0, 2.0]]))  # zero gradient: no move


def test_shift_handles_tuple_outputs():
    shift = ResidualShift()
    hidden = torch.arange(12.0).reshape(1, 3, 4)
    shift.rows, shift.mask = torch.ones(1, 4), torch.tensor([[1, 1, 0]])
    out = shift(None, (), (hidden, "cache"))
    assert out[1] == "cache"
    assert torch.equal(out[0][0, :2], hidden[0, :2] + 1) and torch.equal(out[0][0, 2], hidden[0, 2])
    assert torch.equal(shift(None, (), hidden), out[0])


def test_hook_adds_delta_exactly(attack_setup):
    model, formatter = attack_setup["unlearned"], attack_setup["formatter"]
    enc = [formatter.encode(ex.question, ex.answer) for ex in FORGET[:2]]
    width = max(len(e.input_ids) for e in enc)
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, : len(e.input_ids)], mask[i, : len(e.input_ids)] = torch.tensor(e.input_ids), 1
    torch.manual_seed(1)
    rows = torch.randn(2, model.config.hidden_size)
    with torch.no_grad():
        clean = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        with residual_hook(model, 0) as shift:
            shift.rows, shift.mask = rows, mask
            shifted = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    # hidden_states[1] is block 0's output (the last entry is after the final norm, so layer 0 is used)
    manual = clean[1] + rows[:, None, :] * mask[:, :, None]
    assert torch.equal(shifted[1], manual)
    assert torch.equal(shifted[1][mask == 0], clean[1][mask == 0])  # padding untouched
    assert not torch.allclose(shifted[2], clean[2])  # the shift reaches the later layers
    assert torch.equal(shifted[0], clean[0])


def test_zero_epsilon_is_the_unperturbed_model(attack_setup):
    model, formatter = attack_setup["unlearned"], attack_setup["formatter"]
    examples = FORGET + RETAIN
    result = latent_probe(model, formatter, examples, layer=1, epsilons=(0,), batch_size=4)
    naive = [naive_nll(model, formatter, ex) for ex in examples]
    assert result.per_example_nll[0] == pytest.approx(naive, abs=1e-5)
    assert result.nll[0] == pytest.approx(sum(naive) / len(naive), abs=1e-5)
    assert result.baseline_nll == result.nll[0]
    assert result.prob[0] == pytest.approx(sum(math.exp(-v) for v in naive) / len(naive), abs=1e-6)
    assert result.recovered == [0.0]
    assert result.delta_norm == [0.0] and torch.equal(result.deltas[0], torch.zeros(model.config.hidden_size))


@pytest.mark.parametrize("scope", ["universal", "per_example"])
def test_monotone_bounded_and_the_reported_nll_is_that_of_the_best_delta(attack_setup, scope):
    model, formatter = attack_setup["unlearned"], attack_setup["formatter"]
    result = latent_probe(model, formatter, FORGET, layer=0, epsilons=(4, 0, 1, 0.5, 8, 2), steps=6,
                          batch_size=3, scope=scope)
    assert result.epsilons == list(EPSILONS)
    assert all(b <= a for a, b in zip(result.nll, result.nll[1:]))
    if scope == "per_example":  # each example's own objective is non-increasing too
        for i in range(len(FORGET)):
            column = [values[i] for values in result.per_example_nll]
            assert all(b <= a for a, b in zip(column, column[1:]))
    assert result.nll[-1] < result.nll[0]  # the attack does something
    for eps, delta, norm, trace in zip(result.epsilons, result.deltas, result.delta_norm, result.history):
        assert float(delta.norm(dim=-1).max()) <= eps * (1 + 1e-6) + 1e-7
        assert norm == pytest.approx(float(delta.norm(dim=-1).max()))
        assert len(trace) == (7 if eps > 0 else 1)
    # the reported NLL is the NLL of the reported δ, recomputed one example at a time with an independent hook
    k = result.epsilons.index(4.0)
    for i, ex in enumerate(FORGET):
        delta = result.deltas[k] if scope == "universal" else result.deltas[k][i]
        assert result.per_example_nll[k][i] == pytest.approx(naive_nll(model, formatter, ex, 0, delta), abs=1e-5)


def test_the_best_iterate_is_kept(attack_setup):
    """Universal scope: NLL(ε_k) = min(NLL(ε_{k-1}), every iterate's objective at ε_k) — including when the last
    iterate is worse than an earlier one (large fixed steps around an interior optimum oscillate)."""
    model, formatter = attack_setup["unlearned"], attack_setup["formatter"]
    result = latent_probe(model, formatter, FORGET, layer=0, epsilons=(0, 1, 2, 4), steps=6, relative=True)
    assert any(trace[-1] > value for trace, value in zip(result.history, result.nll))  # the case is exercised
    for k in range(1, len(result.epsilons)):
        assert result.nll[k] == min(result.nll[k - 1], *result.history[k])


def test_model_is_restored_and_the_hook_removed(attack_setup, monkeypatch):
    model, formatter = attack_setup["unlearned"], attack_setup["formatter"]
    model.train()
    frozen_name = "model.embed_tokens.weight"
    model.requires_grad_(True)  # a known mix of flags, whatever earlier tests did
    dict(model.named_parameters())[frozen_name].requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}
    hooks = [dict(layer._forward_hooks) for layer in model.model.layers]
    try:
        latent_probe(model, formatter, FORGET[:2], layer=1, epsilons=(0, 2), steps=3)
        assert model.training
        assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
        assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())
        for name, p in model.named_parameters():  # no gradient reached the weights
            assert (p.grad is None) == (grads[name] is None) and (p.grad is None or torch.equal(p.grad, grads[name]))
        assert [dict(layer._forward_hooks) for layer in model.model.layers] == hooks

        def broken(logits, labels):
            raise RuntimeError("boom")

        monkeypatch.setattr(latent, "answer_nll_rows", broken)
        with pytest.raises(RuntimeError, match="boom"):
            latent_probe(model, formatter, FORGET[:2], layer=1, epsilons=(0, 2), steps=3)
        assert model.training
        assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
        assert [dict(layer._forward_hooks) for layer in model.model.layers] == hooks
    finally:
        model.requires_grad_(True)
        model.eval()


def test_residual_norm_and_relative_epsilons(attack_setup):
    model, formatter = attack_setup["unlearned"], attack_setup["formatter"]
    examples = FORGET[:3]
    norms = []
    for ex in examples:  # naive: block 0's output from output_hidden_states, one example at a time
        enc = formatter.encode(ex.question, ex.answer)
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([enc.input_ids]), output_hidden_states=True).hidden_states[1][0]
        norms += hidden.double().norm(dim=-1).tolist()
    expected = math.fsum(norms) / len(norms)
    assert residual_norm(model, formatter, examples, 0, batch_size=2) == pytest.approx(expected, rel=1e-5)
    result = latent_probe(model, formatter, examples, layer=0, epsilons=(0, 0.5), steps=2, relative=True)
    assert result.epsilon_fractions == [0.0, 0.5]
    assert result.residual_norm == pytest.approx(expected, rel=1e-5)
    assert result.epsilons == pytest.approx([0.0, 0.5 * result.residual_norm])
    assert result.delta_norm[1] <= result.epsilons[1] * (1 + 1e-6)


def test_recovered_on_hand_values():
    result = LatentProbeResult(layer=0, scope="universal", epsilons=[0.0, 1.0, 2.0], nll=[2.0, 1.5, 1.0],
                               prob=[0.2, 0.3, 0.5], per_example_nll=[[2.0], [1.5], [1.0]], baseline_nll=2.0,
                               baseline_prob=0.2, delta_norm=[0.0, 1.0, 2.0], deltas=[], history=[],
                               residual_norm=3.0)
    assert result.recovered == pytest.approx([0.0, 0.1, 0.3])
    assert [r.value for r in result.recovered_fraction(0.6)] == pytest.approx([0.0, 0.1 / 0.4, 0.3 / 0.4])
    assert result.recovered_fraction(0.2)[1].value is None  # target equals the unperturbed model: undefined
    summary = result.to_dict(target_prob=0.6)
    assert summary["recovered_fraction"] == pytest.approx([0.0, 0.25, 0.75]) and "deltas" not in summary


def test_bad_arguments_are_user_errors(attack_setup):
    model, formatter = attack_setup["unlearned"], attack_setup["formatter"]
    with pytest.raises(UnlearnkitError, match=r"choose a layer in 0\.\.1"):
        latent_probe(model, formatter, FORGET, layer=2)
    with pytest.raises(UnlearnkitError, match=r"0\.\.1"):
        residual_norm(model, formatter, FORGET, layer=-1)
    with pytest.raises(UnlearnkitError, match="scope"):
        latent_probe(model, formatter, FORGET, layer=0, scope="tokens")
    with pytest.raises(UnlearnkitError, match="epsilons"):
        latent_probe(model, formatter, FORGET, layer=0, epsilons=(0, -1))
    with pytest.raises(UnlearnkitError, match="steps"):
        latent_probe(model, formatter, FORGET, layer=0, steps=0)
    with pytest.raises(UnlearnkitError, match="no examples"):
        latent_probe(model, formatter, [], layer=0)
    assert all(not layer._forward_hooks or all(not isinstance(h, ResidualShift) for h in layer._forward_hooks.values())
               for layer in model.model.layers)


def test_large_epsilon_brings_the_forget_answers_back(attack_setup):
    """The gradient-ascent model still holds the forget answers in its weights: a residual shift of twice the
    typical residual norm lifts their probability from ~0 by far more than the same attack does on the retain
    model, which never saw them (on these tiny models: ~0.05 vs ~0.005 gained, NLL ~14.5 -> ~3.0 vs ~7.1 -> ~5.1)."""
    formatter, target = attack_setup["formatter"], attack_setup["target"]
    target_prob = sum(math.exp(-naive_nll(target, formatter, ex)) for ex in FORGET) / len(FORGET)
    unlearned = latent_probe(attack_setup["unlearned"], formatter, FORGET, layer=0, epsilons=(0, 2.0), relative=True)
    control = latent_probe(attack_setup["retain"], formatter, FORGET, layer=0, epsilons=(0, 2.0), relative=True)
    assert unlearned.baseline_prob < 1e-3 < target_prob  # unlearning removed the answers
    assert unlearned.nll[-1] < unlearned.baseline_nll - 5  # the answers come back ...
    assert unlearned.recovered[-1] > 0.01 and unlearned.recovered_fraction(target_prob)[-1].value > 0.01
    assert unlearned.recovered[-1] > 3 * control.recovered[-1]  # ... far more than on a model that never knew them
    assert unlearned.nll[-1] < control.nll[-1] < control.baseline_nll < unlearned.baseline_nll
