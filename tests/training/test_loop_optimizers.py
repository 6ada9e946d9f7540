"""The optimizer axis through the real loop: the default is torch's AdamW bit for bit; lion resumes exactly."""

import pytest
import torch

from training_fixtures import PAD, InterruptAt, NoisyGradDiff, assert_same_weights, make_examples, tiny_llama, weights
from unlearnkit.errors import UnlearnkitError
from unlearnkit.training import TrainConfig, train
from unlearnkit.training import loop as loop_module


def _train(tmp_path, name, objective=None, resume=False, **settings):
    forget, retain = make_examples(5, seed=1), make_examples(3, seed=2)
    config = TrainConfig(epochs=2, batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-2, seed=3,
                         weight_decay=0.1, **settings)
    model = tiny_llama()
    result = train(model, objective or NoisyGradDiff(), forget, retain, None, PAD, config, tmp_path / name,
                   resume=resume, progress=False)
    return model, result


def test_default_explicit_adamw_and_torch_adamw_give_identical_weights(tmp_path, monkeypatch):
    default, _ = _train(tmp_path, "default")
    explicit, _ = _train(tmp_path, "explicit", optimizer={"name": "adamw"})
    monkeypatch.setattr(loop_module, "build_optimizer",  # the loop's optimizer before it was selectable
                        lambda parameters, name, params, lr, wd: torch.optim.AdamW(parameters, lr=lr, weight_decay=wd))
    torch_adamw, _ = _train(tmp_path, "torch")
    assert_same_weights(weights(default), weights(explicit))
    assert_same_weights(weights(default), weights(torch_adamw))


@pytest.mark.parametrize("optimizer", [{"name": "lion", "beta1": 0.8}, {"name": "sign_adam", "scale": "mean"}])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, optimizer):
    straight, full = _train(tmp_path, "a", optimizer=optimizer)
    with pytest.raises(KeyboardInterrupt):  # 3 micro-batches per epoch: call 5 is inside epoch 2
        _train(tmp_path, "b", InterruptAt(5), optimizer=optimizer)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["epoch-1"]
    resumed, result = _train(tmp_path, "b", resume=True, optimizer=optimizer)
    assert_same_weights(weights(resumed), weights(straight))
    assert [r["loss"] for r in result.logs] == [r["loss"] for r in full.logs]
    initial = weights(tiny_llama())
    assert any(not torch.equal(initial[k], v) for k, v in weights(straight).items())


def test_lion_trains_differently_from_adamw(tmp_path):
    adamw, _ = _train(tmp_path, "adamw")
    lion, _ = _train(tmp_path, "lion", optimizer="lion")
    assert any(not torch.equal(v, weights(lion)[k]) for k, v in weights(adamw).items())


def test_resume_refuses_a_changed_optimizer(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "b", InterruptAt(5), optimizer="lion")
    with pytest.raises(UnlearnkitError, match="cannot resume: .*optimizer"):
        _train(tmp_path, "b", resume=True)
