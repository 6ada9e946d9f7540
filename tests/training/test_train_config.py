"""One training-settings model: the run config's sections are its TrainSettings, the loop takes TrainConfig."""

import pytest
from pydantic import ValidationError

from unlearnkit.config import RunConfig
from unlearnkit.training.config import TrainConfig, TrainSettings


def test_the_run_config_sections_are_the_loops_settings():
    assert RunConfig.model_fields["train"].annotation is TrainSettings
    assert list(TrainConfig.model_fields) == [*TrainSettings.model_fields, "seed", "save_every_epoch"]
    for name, field in TrainConfig.model_fields.items():
        assert field.description, f"{name} has no description"


def test_to_dict_is_unchanged():
    """to_dict feeds the prepared-model cache key and the resume check of checkpoints: same keys and values as the
    former dataclass's asdict()."""
    assert TrainConfig().to_dict() == {
        "epochs": 5, "batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 1e-5, "weight_decay": 0.01,
        "warmup_steps": None, "schedule": "linear", "max_grad_norm": None, "bf16": False, "seed": 0,
        "max_steps": None, "save_every_epoch": True}


def test_settings_plus_the_run_seed_make_the_loops_config():
    from unlearnkit.pipeline import train_config

    settings = RunConfig.model_validate({"train": {"epochs": 2, "learning_rate": "1e-3"}, "seed": 7}).train
    config = train_config(settings, 7)
    assert (config.epochs, config.learning_rate, config.seed, config.save_every_epoch) == (2, 1e-3, 7, True)


@pytest.mark.parametrize("values", [dict(epochs=0), dict(max_steps=0), dict(weight_decay=-0.1), dict(bf16="maybe"),
                                    dict(seed="x"), dict(unknown=1)])
def test_bad_values_are_refused(values):
    with pytest.raises(ValidationError):
        TrainConfig(**values)
