"""ℓ1-sparse unlearning (``train.l1``, training/l1.py): the decaying penalty of Jia et al., Model Sparsity Can Simplify
Machine Unlearning (NeurIPS 2023, arXiv:2304.04934; OPTML-Group/Unlearn-Sparse ``unlearn/FT.py``: FT_l1 with
α_t = α·(1 − e/(E − E_no_l1)), research/methods.md §14), per optimizer step, on top of any method.

Checked against values worked out here: the schedule by hand, the penalised loss and its gradient against the
method's loss plus a float64 sum of |θ| written out parameter by parameter, and through the real loop: a large
weight leaves sparser (smaller ℓ1) weights than the same run without it, for a first-order and a closure optimizer.
"""

import pytest
import torch

from training_fixtures import PAD, ExampleMeanNLL, NoisyGradDiff, make_examples, tiny_llama
from unlearnkit.config import parse_config
from unlearnkit.errors import UnlearnkitError
from unlearnkit.training import TrainConfig, train
from unlearnkit.training.config import L1Settings
from unlearnkit.training.l1 import L1Penalised, l1_weight


def test_schedule_by_hand():
    # α = 0.5, T = 10 steps, the last 2 without the penalty: the decay runs over T − 2 = 8 steps
    linear = [l1_weight(t, 10, 0.5, "linear", 2) for t in range(10)]
    assert linear == pytest.approx([0.5, 0.4375, 0.375, 0.3125, 0.25, 0.1875, 0.125, 0.0625, 0.0, 0.0])
    constant = [l1_weight(t, 10, 0.5, "constant", 2) for t in range(10)]
    assert constant == [0.5] * 8 + [0.0, 0.0]
    assert [l1_weight(t, 4, 1.0, "linear") for t in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])


def naive_l1(model) -> float:
    total = 0.0
    for p in model.parameters():
        for value in p.detach().double().flatten().tolist():
            total += abs(value)
    return total


def test_penalised_loss_and_gradient_equal_the_method_plus_alpha_times_the_l1_norm():
    model = tiny_llama()
    batch_rows = make_examples(3, seed=4)
    from unlearnkit.training.batches import forget_batch

    batch = forget_batch(batch_rows, [0, 1, 2], PAD, None, torch.device("cpu"))
    method = ExampleMeanNLL(sign=-1.0)
    wrapped = L1Penalised(method, L1Settings(weight=0.01, schedule="linear"), total_steps=4)
    wrapped.begin_step(1)  # α_1 = 0.01·(1 − 1/4)
    alpha = 0.0075
    loss, logs = wrapped.loss(model, batch, None)
    plain, _ = method.loss(model, batch, None)
    assert float(loss.detach()) == pytest.approx(float(plain.detach()) + alpha * naive_l1(model), rel=1e-6)
    assert logs["l1_weight"] == pytest.approx(alpha)
    penalised_grads = torch.autograd.grad(loss, list(model.parameters()))
    plain_grads = torch.autograd.grad(method.loss(model, batch, None)[0], list(model.parameters()))
    for p, g, g0 in zip(model.parameters(), penalised_grads, plain_grads):
        torch.testing.assert_close(g - g0, alpha * torch.sign(p.detach()), rtol=1e-4, atol=1e-6)
    # what the wrapper does not define is the method's
    assert wrapped.name == method.name and wrapped.sign == -1.0 and wrapped.params() == method.params()


def _train(tmp_path, name, **settings):
    forget, retain = make_examples(6, seed=1), make_examples(4, seed=2)
    config = TrainConfig(epochs=3, batch_size=2, learning_rate=1e-2, seed=3, weight_decay=0.0, **settings)
    model = tiny_llama()
    result = train(model, NoisyGradDiff(), forget, retain, None, PAD, config, tmp_path / name, progress=False)
    return model, result


@pytest.mark.parametrize("optimizer", ["adamw", {"name": "sam", "perturb": "all"}])
def test_a_large_weight_leaves_sparser_weights(tmp_path, optimizer):
    plain, _ = _train(tmp_path, "plain", optimizer=optimizer)
    sparse, result = _train(tmp_path, "sparse", optimizer=optimizer, l1={"weight": 1.0, "schedule": "linear"})
    initial = naive_l1(tiny_llama())
    assert naive_l1(sparse) < 0.9 * naive_l1(plain)
    assert naive_l1(sparse) < initial
    weights_logged = [log["l1_weight"] for log in result.logs]
    assert weights_logged == pytest.approx([1.0 - t / 9 for t in range(9)])


def test_config_block_is_validated_at_load_and_left_out_of_keys_when_unset():
    base = {"task": {"source": "synthetic"}, "model": {"base": "tiny"}}
    cfg = parse_config({**base, "train": {"l1": {"weight": 1e-4, "schedule": "constant", "no_l1_steps": 2}}})
    assert cfg.train.l1 == L1Settings(weight=1e-4, schedule="constant", no_l1_steps=2)
    with pytest.raises(UnlearnkitError, match="l1"):
        parse_config({**base, "train": {"l1": {"weight": 1e-4, "schedule": "cosine"}}})
    with pytest.raises(UnlearnkitError, match="l1"):
        parse_config({**base, "train": {"l1": {"weight": 0}}})
    assert "l1" not in TrainConfig().to_dict()
    assert TrainConfig(l1={"weight": 0.1}).to_dict()["l1"]["weight"] == 0.1


def test_no_l1_steps_covering_the_whole_run_is_refused(tmp_path):
    with pytest.raises(UnlearnkitError, match="no_l1_steps"):
        _train(tmp_path, "none", l1={"weight": 1.0, "no_l1_steps": 9})
