"""The gradient the optimizer sees is the mean over the step's examples, computed naively one example at a time."""

import contextlib

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from training_fixtures import PAD, ExampleMeanNLL, make_examples, per_example_nll, tiny_llama
from unlearnkit.data.formatting import collate
from unlearnkit.training import TrainConfig, train


@contextlib.contextmanager
def captured_gradients():
    """Collect, before each optimizer step, a copy of every parameter's gradient (after clipping)."""
    steps: list[list[torch.Tensor]] = []

    def hook(optimizer, args, kwargs):
        steps.append([p.grad.detach().clone() for group in optimizer.param_groups for p in group["params"]])

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield steps
    finally:
        handle.remove()


def naive_mean_gradient(model, examples) -> list[torch.Tensor]:
    """(1/n) Σ_i ∇ NLL_i, one example per forward pass."""
    model.zero_grad(set_to_none=True)
    for example in examples:
        (per_example_nll(model, collate([example], PAD)).sum() / len(examples)).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def test_uneven_step_gradient_is_the_mean_over_its_examples(tmp_path):
    # 5 examples, 2 per micro-batch, 4 micro-batches: one step split 2, 1, 1, 1 — unequal micro-batch sizes
    examples = make_examples(5, seed=0)
    model = tiny_llama(seed=0)
    expected = naive_mean_gradient(tiny_llama(seed=0), examples)
    config = TrainConfig(epochs=1, batch_size=2, gradient_accumulation_steps=4, learning_rate=1e-3, warmup_steps=0)
    with captured_gradients() as steps:
        train(model, ExampleMeanNLL(), examples, None, None, PAD, config, tmp_path, progress=False)
    assert len(steps) == 1
    for got, want in zip(steps[0], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_short_last_step_of_an_epoch_is_a_mean_too(tmp_path):
    # 5 examples, 4 per step: the second step holds the single remaining example with weight 1
    examples = make_examples(5, seed=1)
    model = tiny_llama(seed=0)
    config = TrainConfig(epochs=1, batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-3, warmup_steps=0)
    with captured_gradients() as steps:
        result = train(model, ExampleMeanNLL(), examples, None, None, PAD, config, tmp_path, progress=False)
    assert result.steps == 2
    # the first step's 4 examples are everything except the one left for the last step
    from unlearnkit.training.sharding import ShardingPlan

    order = ShardingPlan(5, 2, 2, 1, seed=0).epoch_order(0)
    first = naive_mean_gradient(tiny_llama(seed=0), [examples[i] for i in order[:4]])
    for got, want in zip(steps[0], first, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_clipping_limits_the_global_gradient_norm(tmp_path):
    examples = make_examples(4, seed=2)
    raw = naive_mean_gradient(tiny_llama(seed=0), examples)
    raw_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw])).item()
    limit = raw_norm / 4
    config = TrainConfig(epochs=1, batch_size=4, learning_rate=1e-3, warmup_steps=0, max_grad_norm=limit)
    with captured_gradients() as steps:
        result = train(tiny_llama(seed=0), ExampleMeanNLL(), examples, None, None, PAD, config, tmp_path,
                       progress=False)
    clipped_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in steps[0]])).item()
    assert abs(clipped_norm - limit) < 1e-4 * limit
    assert abs(result.logs[0]["grad_norm"] - raw_norm) < 1e-4 * raw_norm  # the log holds the norm before clipping
    for got, want in zip(steps[0], raw):  # clipping only rescales
        torch.testing.assert_close(got, want * (limit / raw_norm), rtol=1e-4, atol=1e-8)
