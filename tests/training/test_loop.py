"""The training loop end to end on a tiny Llama: learning, schedule, checkpoints, resume, NaN guard, contracts."""

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_model

from training_fixtures import (
    PAD,
    ExampleMeanNLL,
    InterruptAt,
    NoisyGradDiff,
    assert_same_weights,
    make_examples,
    per_example_nll,
    tiny_llama,
    weights,
)
from unlearnkit.data.formatting import collate
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.training import FineTune, TrainConfig, train


def mean_nll(model, examples) -> float:
    with torch.no_grad():
        return per_example_nll(model.eval(), collate(examples, PAD)).mean().item()


def test_finetune_lowers_the_nll(tmp_path):
    examples = make_examples(8, seed=0)
    model = tiny_llama(seed=0)
    before = mean_nll(model, examples)
    config = TrainConfig(epochs=10, batch_size=4, learning_rate=1e-2, warmup_steps=0, schedule="constant")
    result = train(model, FineTune(), examples, None, None, PAD, config, tmp_path, progress=False)
    after = mean_nll(model, examples)
    assert result.steps == 20
    assert after < 0.5 * before, (before, after)
    assert result.logs[-1]["loss"] < result.logs[0]["loss"]
    assert model.training is False  # the caller's mode (eval, set by mean_nll) is restored


def test_logs_and_linear_warmup_schedule_by_hand(tmp_path):
    # 4 examples, 2 per step: 2 steps per epoch, 3 epochs = 6 steps; warm-up defaults to one epoch (2 steps)
    config = TrainConfig(epochs=3, batch_size=2, learning_rate=0.1)
    result = train(tiny_llama(), ExampleMeanNLL(), make_examples(4), None, None, PAD, config, tmp_path,
                   progress=False)
    # linear warm-up k/W for k < W, then linear decay (T - k)/(T - W), with T = 6, W = 2
    assert [round(r["lr"], 10) for r in result.logs] == [0.0, 0.05, 0.1, 0.075, 0.05, 0.025]
    assert [r["step"] for r in result.logs] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in result.logs] == [1, 1, 2, 2, 3, 3]
    assert set(result.logs[0]) >= {"step", "epoch", "loss", "lr", "grad_norm", "forget_nll"}
    assert result.logs[0]["loss"] == pytest.approx(result.logs[0]["forget_nll"])


@pytest.mark.parametrize("schedule, expected", [
    ("constant", [0.0, 0.5, 1.0, 1.0]),
    ("cosine", [0.0, 0.5, 1.0, 0.5]),  # cosine decay over T - W = 2 steps: 0.5·(1 + cos(π·1/2)) at the last
])
def test_other_schedules(tmp_path, schedule, expected):
    config = TrainConfig(epochs=4, batch_size=1, learning_rate=1.0, warmup_steps=2, schedule=schedule)
    result = train(tiny_llama(), ExampleMeanNLL(), make_examples(1), None, None, PAD, config, tmp_path,
                   progress=False)
    assert [round(r["lr"], 10) for r in result.logs] == expected


def test_epoch_checkpoints_are_complete_and_hold_the_weights(tmp_path):
    model = tiny_llama()
    config = TrainConfig(epochs=2, batch_size=2, learning_rate=1e-2, warmup_steps=0)
    result = train(model, ExampleMeanNLL(), make_examples(3), None, None, PAD, config, tmp_path, progress=False)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["epoch-1", "epoch-2"]  # no temporary folders left
    assert result.last_checkpoint == root / "epoch-2"
    state = json.loads((root / "epoch-2" / "state.json").read_text())
    assert state["step"] == 4 and state["epoch"] == 2 and state["config"]["batch_size"] == 2
    assert len(state["logs"]) == 4
    fresh = tiny_llama(seed=99)
    load_model(fresh, str(root / "epoch-2" / "model.safetensors"))
    assert_same_weights(weights(fresh), weights(model))
    # epoch-1 holds different (earlier) weights
    load_model(fresh, str(root / "epoch-1" / "model.safetensors"))
    assert not torch.equal(fresh.model.norm.weight, model.model.norm.weight)


def test_max_steps_overrides_epochs_and_checkpoints_the_end(tmp_path):
    # 4 examples, 2 per step: 5 steps = two and a half epochs
    config = TrainConfig(epochs=1, batch_size=2, max_steps=5, save_every_epoch=False)
    result = train(tiny_llama(), ExampleMeanNLL(), make_examples(4), None, None, PAD, config, tmp_path,
                   progress=False)
    assert result.steps == 5 and [r["epoch"] for r in result.logs] == [1, 1, 2, 2, 3]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-5"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    forget, retain = make_examples(5, seed=1), make_examples(3, seed=2)
    # 5 examples, micro-batches of 2, accumulation 2: steps of 4 + 1 examples, 2 steps per epoch, 3 micro-batches
    config = TrainConfig(epochs=2, batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-2, seed=3)

    straight = tiny_llama()
    full = train(straight, NoisyGradDiff(), forget, retain, None, PAD, config, tmp_path / "a", progress=False)

    interrupted = tiny_llama()
    with pytest.raises(KeyboardInterrupt):  # 3 micro-batches per epoch: call 5 is inside epoch 2
        train(interrupted, InterruptAt(5), forget, retain, None, PAD, config, tmp_path / "b", progress=False)
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["epoch-1"]

    resumed = tiny_llama()  # a fresh process would start from the initial weights again
    result = train(resumed, NoisyGradDiff(), forget, retain, None, PAD, config, tmp_path / "b", resume=True,
                   progress=False)
    assert_same_weights(weights(resumed), weights(straight))
    assert result.steps == full.steps == 4
    assert [r["loss"] for r in result.logs] == [r["loss"] for r in full.logs]
    assert result.last_checkpoint == tmp_path / "b" / "checkpoints" / "epoch-2"


def test_resume_after_the_end_changes_nothing(tmp_path):
    config = TrainConfig(epochs=1, batch_size=2)
    examples = make_examples(2)
    trained = tiny_llama()
    train(trained, ExampleMeanNLL(), examples, None, None, PAD, config, tmp_path, progress=False)
    again = tiny_llama()
    result = train(again, ExampleMeanNLL(), examples, None, None, PAD, config, tmp_path, resume=True,
                   progress=False)
    assert result.steps == 1
    assert_same_weights(weights(again), weights(trained))


def test_resume_refuses_changed_settings_and_fresh_runs_refuse_used_folders(tmp_path):
    examples = make_examples(2)
    train(tiny_llama(), ExampleMeanNLL(), examples, None, None, PAD, TrainConfig(epochs=1, batch_size=2), tmp_path,
          progress=False)
    with pytest.raises(UnlearnkitError, match="batch_size"):
        train(tiny_llama(), ExampleMeanNLL(), examples, None, None, PAD, TrainConfig(epochs=1, batch_size=1),
              tmp_path, resume=True, progress=False)
    with pytest.raises(UnlearnkitError, match="method"):
        train(tiny_llama(), ExampleMeanNLL(sign=-1.0), examples, None, None, PAD,
              TrainConfig(epochs=1, batch_size=2), tmp_path, resume=True, progress=False)
    with pytest.raises(UnlearnkitError, match="resume=True"):
        train(tiny_llama(), ExampleMeanNLL(), examples, None, None, PAD, TrainConfig(epochs=1, batch_size=2),
              tmp_path, progress=False)


class NanAt(ExampleMeanNLL):
    def __init__(self, at: int):
        super().__init__()
        self._at = at

    def loss(self, model, forget_batch, retain_batch):
        loss, logs = super().loss(model, forget_batch, retain_batch)
        return (loss * float("nan") if self._calls == self._at else loss), logs


def test_nan_loss_stops_before_the_update_and_names_the_last_checkpoint(tmp_path):
    model = tiny_llama()
    config = TrainConfig(epochs=3, batch_size=2, learning_rate=1e-2, warmup_steps=0)
    # 4 examples, 2 per step: call 3 is step 3, the first step of epoch 2
    with pytest.raises(UnlearnkitError, match=r"loss is nan at step 3 \(epoch 2\).*epoch-1.*max_grad_norm"):
        train(model, NanAt(3), make_examples(4), None, None, PAD, config, tmp_path, progress=False)
    saved = tiny_llama(seed=5)
    load_model(saved, str(tmp_path / "checkpoints" / "epoch-1" / "model.safetensors"))
    assert_same_weights(weights(model), weights(saved))  # no update was applied with the NaN gradient
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_in_the_first_epoch_says_no_checkpoint_exists(tmp_path):
    with pytest.raises(UnlearnkitError, match="step 1 .*no checkpoint"):
        train(tiny_llama(), NanAt(1), make_examples(2), None, None, PAD, TrainConfig(batch_size=2), tmp_path,
              progress=False)


class Recorder(UnlearningMethod):
    """Checks the batch contract and records what prepare saw."""

    name = "recorder"
    summary = citation = "test objective"
    uses_retain = True
    uses_idk = True

    def __init__(self, forget, idk, retain):
        self._forget, self._idk, self._retain = forget, idk, retain
        self.reference_seen = None

    @property
    def needs_reference_model(self):
        return True

    def prepare(self, model, forget_batches, reference_model=None):
        batches = list(forget_batches)
        self.prepared_indices = torch.cat([b["index"] for b in batches]).tolist()
        self.prepared_weights = {k: v.clone() for k, v in model.state_dict().items()}
        self.prepared_training_mode = model.training
        self.reference_seen = reference_model
        for b in batches:
            self._check_forget(b)

    def _check_forget(self, batch):
        rows = batch["index"].tolist()
        expected = collate([self._forget[i] for i in rows], PAD)
        refusal = collate([self._idk[i] for i in rows], PAD)
        for key in ("input_ids", "attention_mask", "labels"):
            assert torch.equal(batch[key], expected[key])
            assert torch.equal(batch["idk_" + key], refusal[key])

    def loss(self, model, forget_batch, retain_batch):
        self._check_forget(forget_batch)
        assert retain_batch["input_ids"].shape[0] == forget_batch["input_ids"].shape[0]
        return per_example_nll(model, retain_batch).mean(), {}

    def trainable_parameters(self, model):
        return [model.model.norm.weight]  # only the final norm is trained


def test_batch_contract_prepare_reference_model_and_trainable_subset(tmp_path):
    forget, retain = make_examples(5, seed=1), make_examples(4, seed=2)
    idk = [make_examples(1, seed=100 + i)[0] for i in range(5)]
    objective = Recorder(forget, idk, retain)
    model = tiny_llama()
    initial = weights(model)
    references = []

    def reference_factory():
        references.append(tiny_llama())
        return references[-1]

    config = TrainConfig(epochs=1, batch_size=2, learning_rate=1e-2, warmup_steps=0)
    train(model, objective, forget, retain, idk, PAD, config, tmp_path, progress=False,
          reference_model_factory=reference_factory)
    assert objective.prepared_indices == [0, 1, 2, 3, 4]  # every forget example, in list order
    assert objective.prepared_training_mode is False
    assert_same_weights(objective.prepared_weights, initial)
    assert len(references) == 1 and objective.reference_seen is references[0]
    assert not objective.reference_seen.training
    assert not any(p.requires_grad for p in objective.reference_seen.parameters())
    after = weights(model)
    assert not torch.equal(after["model.norm.weight"], initial["model.norm.weight"])
    assert all(torch.equal(after[k], initial[k]) for k in initial if k != "model.norm.weight")
    assert all(p.requires_grad for p in model.parameters())  # frozen flags are restored


def test_prepare_sees_the_initial_model_on_resume(tmp_path):
    forget, retain = make_examples(4, seed=1), make_examples(4, seed=2)
    idk = make_examples(4, seed=3)
    config = TrainConfig(epochs=2, batch_size=2, learning_rate=1e-2, warmup_steps=0)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_llama(), _InterruptingRecorder(forget, idk, retain, at=3), forget, retain, idk, PAD, config,
              tmp_path, progress=False, reference_model_factory=tiny_llama)
    model = tiny_llama()
    initial = weights(model)
    objective = Recorder(forget, idk, retain)
    train(model, objective, forget, retain, idk, PAD, config, tmp_path, resume=True, progress=False,
          reference_model_factory=tiny_llama)
    assert_same_weights(objective.prepared_weights, initial)


class _InterruptingRecorder(Recorder):
    def __init__(self, forget, idk, retain, at):
        super().__init__(forget, idk, retain)
        self._at, self._calls = at, 0

    def loss(self, model, forget_batch, retain_batch):
        self._calls += 1
        if self._calls == self._at:
            raise KeyboardInterrupt
        return super().loss(model, forget_batch, retain_batch)


def test_bf16_autocast_trains(tmp_path):
    examples = make_examples(4)
    model = tiny_llama()
    config = TrainConfig(epochs=3, batch_size=4, learning_rate=3e-3, warmup_steps=0, bf16=True)
    result = train(model, FineTune(), examples, None, None, PAD, config, tmp_path, progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.logs[-1]["loss"] < result.logs[0]["loss"]


def test_progress_bar_runs(tmp_path):
    result = train(tiny_llama(), ExampleMeanNLL(), make_examples(2), None, None, PAD,
                   TrainConfig(epochs=1, batch_size=2), tmp_path, progress=True)
    assert result.steps == 1


@pytest.mark.parametrize("change, needle", [
    (dict(batch_size=0), "batch_size"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(schedule="step"), "schedule"),
    (dict(max_grad_norm=-1.0), "max_grad_norm"),
    (dict(warmup_steps=-2), "warmup_steps"),
])
def test_bad_settings_are_refused_before_training(change, needle):
    """A TrainConfig cannot hold a bad value, so train() never sees one: construction and assignment validate, and
    TrainConfig.checked (for settings a user passed through an API) says so in one line."""
    with pytest.raises(ValidationError, match=needle):
        TrainConfig(**change)
    config = TrainConfig()
    with pytest.raises(ValidationError, match=needle):
        setattr(config, *next(iter(change.items())))
    with pytest.raises(UnlearnkitError, match=needle) as err:
        TrainConfig.checked(**change)
    assert "\n" not in str(err.value)


def test_missing_inputs_are_user_errors(tmp_path):
    with pytest.raises(UnlearnkitError, match="forget set is empty"):
        train(tiny_llama(), ExampleMeanNLL(), [], None, None, PAD, TrainConfig(), tmp_path, progress=False)
    with pytest.raises(UnlearnkitError, match="retain"):
        train(tiny_llama(), NoisyGradDiff(), make_examples(2), None, None, PAD, TrainConfig(), tmp_path,
              progress=False)
    forget = make_examples(2)
    with pytest.raises(UnlearnkitError, match="refusal"):
        train(tiny_llama(), Recorder(forget, [], []), forget, make_examples(2), make_examples(1), PAD,
              TrainConfig(), tmp_path, progress=False)
    with pytest.raises(UnlearnkitError, match="reference_model_factory"):
        train(tiny_llama(), Recorder(forget, [], []), forget, make_examples(2), make_examples(2), PAD,
              TrainConfig(), tmp_path, progress=False)


def test_warmup_defaults_to_one_epoch_capped_below_the_total():
    assert TrainConfig(epochs=3).resolved_warmup_steps(steps_per_epoch=4) == 4
    assert TrainConfig(epochs=1).resolved_warmup_steps(steps_per_epoch=4) == 3
    assert TrainConfig(epochs=1, warmup_steps=10).resolved_warmup_steps(steps_per_epoch=1) == 0
    assert TrainConfig(max_steps=7, warmup_steps=2).resolved_warmup_steps(steps_per_epoch=100) == 2


class InterruptingNLL(ExampleMeanNLL):
    def __init__(self, at: int):
        super().__init__()
        self._at = at

    def loss(self, model, forget_batch, retain_batch):
        if self._calls + 1 == self._at:
            raise KeyboardInterrupt
        return super().loss(model, forget_batch, retain_batch)


def test_a_half_written_checkpoint_is_ignored_and_cleaned(tmp_path):
    examples = make_examples(4)
    config = TrainConfig(epochs=2, batch_size=2, learning_rate=1e-2)
    straight = tiny_llama()
    train(straight, ExampleMeanNLL(), examples, None, None, PAD, config, tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_llama(), InterruptingNLL(at=3), examples, None, None, PAD, config, tmp_path / "b",
              progress=False)
    # a kill during the save of epoch 2 leaves only a temporary folder, without state.json
    partial = tmp_path / "b" / "checkpoints" / ".tmp-epoch-2-123"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    resumed = tiny_llama()
    result = train(resumed, ExampleMeanNLL(), examples, None, None, PAD, config, tmp_path / "b", resume=True,
                   progress=False)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["epoch-1", "epoch-2"]
    assert result.steps == 4
    assert_same_weights(weights(resumed), weights(straight))


def test_on_step_sees_every_step_and_its_result_is_logged_and_checkpointed(tmp_path):
    """The hook runs after each optimizer step with the updated model; what it returns lands in the log."""
    model, examples = tiny_llama(seed=0), make_examples(8, seed=0)
    seen = []

    def on_step(step, m, log):
        seen.append((step, log["step"], m is model))
        m.eval()  # the loop puts the model back in train mode
        return {"probe": float(step) * 10}

    config = TrainConfig(epochs=2, batch_size=4, learning_rate=1e-3, seed=0)
    result = train(model, FineTune(), examples, None, None, PAD, config, tmp_path, progress=False, on_step=on_step)
    assert seen == [(s, s, True) for s in range(1, result.steps + 1)]
    assert [log["probe"] for log in result.logs] == [10.0 * s for s in range(1, result.steps + 1)]
    saved = json.loads((result.last_checkpoint / "state.json").read_text())
    assert [log["probe"] for log in saved["logs"]] == [log["probe"] for log in result.logs]
