"""The closure optimizers through the real loop: the closure covers the whole step (accumulation = one big batch,
2 processes = 1 process with accumulation), a resumed run equals an uninterrupted one, the NaN guard stops a
zeroth-order run, and no gradient is left on the weights by zeroth-order or ES steps."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from closure_fixtures import TWO_PROCESS_OPTIMIZERS, SplitNoisyGradDiff, closure_run
from safetensors.torch import load_model
from training_fixtures import (
    PAD,
    ExampleMeanNLL,
    InterruptAt,
    NoisyGradDiff,
    assert_same_weights,
    make_examples,
    tiny_llama,
    weights,
)

from unlearnkit.errors import UnlearnkitError
from unlearnkit.training import TrainConfig, train

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def _train(tmp_path, name, optimizer, objective=None, resume=False, **settings):
    forget, retain = make_examples(5, seed=1), make_examples(3, seed=2)
    values = dict(epochs=2, batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-2, seed=3, weight_decay=0.1,
                  optimizer=optimizer)
    config = TrainConfig(**{**values, **settings})
    model = tiny_llama()
    result = train(model, objective or NoisyGradDiff(), forget, retain, None, PAD, config, tmp_path / name,
                   resume=resume, progress=False)
    return model, result


@pytest.mark.parametrize("optimizer", [{"name": "zo", "directions": 2, "distribution": "gaussian", "mu": 0.01},
                                       {"name": "es", "population": 4, "sigma": 0.01}])
def test_accumulated_micro_batches_equal_one_batch_of_the_whole_step(tmp_path, optimizer):
    # the same 4 examples per step (the order depends on the seed only): as 2 micro-batches of 2, or one of 4;
    # an example-mean loss, so the closure's weighted sum is the same function of the weights. The losses differ
    # by float32 rounding (other padding), which a difference quotient divides by 2μ: μ and σ are taken large
    # enough (0.01) for that to stay below the tolerance
    split, _ = _train(tmp_path, "split", optimizer, ExampleMeanNLL(sign=-1.0), batch_size=2,
                      gradient_accumulation_steps=2)
    whole, _ = _train(tmp_path, "whole", optimizer, ExampleMeanNLL(sign=-1.0), batch_size=4,
                      gradient_accumulation_steps=1)
    initial = weights(tiny_llama())
    for key, value in weights(whole).items():
        assert not torch.equal(value, initial[key]), key
        torch.testing.assert_close(weights(split)[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("optimizer,calls_per_step", [({"name": "zo"}, 2), ({"name": "sam", "perturb": "all"}, 2)])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, optimizer, calls_per_step):
    straight, full = _train(tmp_path, "a", optimizer)
    assert [r["loss_evaluations"] for r in full.logs] == [calls_per_step] * 4
    # epoch 1: a step of 2 micro-batches and one of 1, so 3·calls_per_step loss calls; the next is inside epoch 2
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "b", optimizer, InterruptAt(3 * calls_per_step + 2))
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["epoch-1"]
    resumed, result = _train(tmp_path, "b", optimizer, resume=True)
    assert_same_weights(weights(resumed), weights(straight))
    assert [r["loss"] for r in result.logs] == [r["loss"] for r in full.logs]


def test_zeroth_order_steps_leave_no_gradient_and_log_their_evaluations(tmp_path):
    model, result = _train(tmp_path, "zo", {"name": "zo", "directions": 3})
    assert all(p.grad is None for p in model.parameters())
    assert [r["loss_evaluations"] for r in result.logs] == [6] * 4 and all(r["grad_norm"] is None
                                                                           for r in result.logs)


class NaNAfter(NoisyGradDiff):
    """NoisyGradDiff whose loss is NaN from its ``at``-th call on."""

    def __init__(self, at: int):
        self._at, self._calls = at, 0

    def loss(self, model, forget_batch, retain_batch):
        self._calls += 1
        loss, logs = super().loss(model, forget_batch, retain_batch)
        return (loss * float("nan") if self._calls >= self._at else loss), logs


def test_the_nan_guard_stops_a_zeroth_order_run(tmp_path):
    with pytest.raises(UnlearnkitError, match=r"training diverged: loss is nan at step 2 .*lower learning_rate$"):
        _train(tmp_path, "nan", {"name": "zo"}, NaNAfter(5))  # step 1 makes 4 calls: call 5 is in step 2


def test_sam_on_the_forget_term_needs_the_terms_apart(tmp_path):
    with pytest.raises(UnlearnkitError, match="optimizer 'sam' cannot train method 'test-noisy-graddiff'.*perturb: all"):
        _train(tmp_path, "refused", {"name": "sam"})
    _, result = _train(tmp_path, "split", {"name": "sam"}, SplitNoisyGradDiff())
    assert [r["loss_evaluations"] for r in result.logs] == [3] * 4


def test_two_processes_equal_one_process_with_accumulation(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(HERE / "ddp_closure_script.py"), str(tmp_path)]
    finished = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    initial = tiny_llama(seed=3).state_dict()
    for name, optimizer in TWO_PROCESS_OPTIMIZERS.items():
        two_processes = tiny_llama(seed=0)
        load_model(two_processes, str(tmp_path / f"final-{name}.safetensors"))
        one_process = closure_run(tmp_path / f"single-{name}", gradient_accumulation_steps=2, optimizer=optimizer)
        for key, value in one_process.state_dict().items():
            assert not torch.equal(value, initial[key]), f"{name}: {key} was not trained"
            torch.testing.assert_close(two_processes.state_dict()[key], value, rtol=1e-5, atol=1e-5,
                                       msg=f"{name}, {key}")


def test_graddiff_loss_is_the_sum_of_its_parts_bit_for_bit_and_sam_trains_it(tmp_path):
    # RetainRegularised.loss is built from loss_parts (the split SAM needs): the default path must not change
    from unlearnkit.methods.registry import method_class
    from unlearnkit.training.batches import forget_batch, retain_batch

    model, method = tiny_llama(), method_class("graddiff")(retain_weight=0.7)
    forget, retain = make_examples(4, seed=1), make_examples(4, seed=2)
    f, r = forget_batch(forget, [0, 1, 2], PAD, None, "cpu"), retain_batch(retain, [1, 2, 3], PAD, "cpu")
    loss, _ = method.loss(model, f, r)
    terms, _ = method.loss_parts(model, f, r)
    by_hand = method.forget_weight * method.forget_loss(model, f)[0] + 0.7 * token_mean_nll(model, r)
    assert torch.equal(loss, terms["forget"] + terms["retain"])
    torch.testing.assert_close(loss, by_hand)
    _, result = _train(tmp_path, "graddiff-sam", {"name": "sam", "rho": 0.05}, method)
    assert [r["loss_evaluations"] for r in result.logs] == [3] * 4


def token_mean_nll(model, batch):
    """The mean token NLL over the batch's answer tokens (GradDiff's retain term, the Hugging Face loss)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


@pytest.mark.parametrize("optimizer", [{"name": "zo", "directions": 2}, {"name": "es", "population": 4},
                                       {"name": "zo_hybrid", "fo_steps": 1, "zo_steps": 1}])
def test_npo_trains_under_the_forward_only_optimizers(tmp_path, optimizer):
    # NPO's reference log-probs are computed once in prepare; its loss then runs under no_grad in every evaluation
    from unlearnkit.methods.registry import method_class

    model, result = _train(tmp_path, "npo", optimizer, method_class("npo")())
    initial = weights(tiny_llama())
    assert any(not torch.equal(initial[k], v) for k, v in weights(model).items())
    assert all(torch.isfinite(v).all() for v in weights(model).values())
    assert all("forget_loss" in r and "retain_loss" in r for r in result.logs)
