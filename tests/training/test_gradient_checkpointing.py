"""train.gradient_checkpointing: the same training with activations recomputed in the backward pass (full weights
and LoRA), switched off again afterwards; refused for a method whose hook changes activations."""

import pytest

from unlearnkit.config import LoraSettings, parse_config
from unlearnkit.errors import UnlearnkitError
from unlearnkit.models.lora import add_lora
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.loop import train

from training_fixtures import PAD, ExampleMeanNLL, assert_same_weights, make_examples, tiny_llama, weights


@pytest.mark.parametrize("lora", [False, True])
def test_checkpointing_gives_the_same_weights(tmp_path, lora):
    examples = make_examples(4)
    trained = {}
    for checkpointing in (False, True):
        model = tiny_llama()
        if lora:
            model = add_lora(model, LoraSettings(r=4))
        config = TrainConfig(max_steps=3, batch_size=2, learning_rate=1e-2, gradient_checkpointing=checkpointing,
                             save_every_epoch=False)
        train(model, ExampleMeanNLL(sign=-1.0), examples, None, None, PAD, config, tmp_path / str(checkpointing),
              progress=False)
        assert not getattr(model, "is_gradient_checkpointing", False)  # switched off after training
        trained[checkpointing] = weights(model)
    assert_same_weights(trained[True], trained[False])


def test_checkpointing_is_not_part_of_the_keys():
    assert TrainConfig(gradient_checkpointing=True).to_dict() == TrainConfig().to_dict()


def test_a_method_that_changes_activations_by_a_hook_is_refused():
    with pytest.raises(UnlearnkitError, match="adv_npo.*set train.gradient_checkpointing to false"):
        parse_config({"method": {"name": "adv_npo"}, "train": {"gradient_checkpointing": True}})
