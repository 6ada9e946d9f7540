"""Weights are read from safetensors only: pickled weights are refused with the conversion to run, never unpickled."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from unlearnkit.attacks import quantize as quantize_module
from unlearnkit.data.synthetic import make_synthetic_task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.models import load as load_module
from unlearnkit.models.load import load_causal_lm
from unlearnkit.models.tiny import build_tiny

TEXTS = make_synthetic_task(n_people=4, forget_people=1, holdout_people=1).texts()


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(TEXTS, seed=0, vocab_size=300, hidden_size=32, layers=1, heads=2)


def pickled_folder(folder, model, tokenizer):
    """A folder as older tools wrote it: config, tokenizer and a pickled ``pytorch_model.bin``, no safetensors."""
    folder.mkdir()
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called: pickled weights must never be read")

    monkeypatch.setattr(torch, "load", refuse)


def test_a_folder_with_only_pickled_weights_is_refused_with_the_conversion(tmp_path, tiny, no_unpickling):
    folder = pickled_folder(tmp_path / "old", *tiny)
    with pytest.raises(UnlearnkitError) as caught:
        load_causal_lm(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert f"model folder {folder} holds only pickled weights (pytorch_model.bin)" in message
    assert "safetensors only" in message
    assert (f"python -c \"from transformers import AutoModelForCausalLM as M; M.from_pretrained('{folder}')"
            f".save_pretrained('{folder}', safe_serialization=True)\"") in message


def test_the_conversion_in_the_message_makes_the_folder_loadable(tmp_path, tiny):
    model, tokenizer = tiny
    folder = pickled_folder(tmp_path / "old", model, tokenizer)
    with pytest.raises(UnlearnkitError) as caught:
        load_causal_lm(folder)
    command = str(caught.value).split('python -c "', 1)[1].rsplit('"', 1)[0]
    exec(command, {})  # what the user runs once, knowingly unpickling their own file
    assert (folder / "model.safetensors").exists()
    loaded, _ = load_causal_lm(folder)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_a_folder_with_both_formats_loads_the_safetensors(tmp_path, tiny, no_unpickling):
    model, tokenizer = tiny
    folder = tmp_path / "both"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    zeros = {name: torch.zeros_like(tensor) for name, tensor in model.state_dict().items()}
    torch.save(zeros, folder / "pytorch_model.bin")  # different weights: the test sees which file was read
    loaded, _ = load_causal_lm(folder)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.parametrize("weights", [None, "model.pt", "weights.ckpt"])
def test_a_folder_without_safetensors_gets_one_line(tmp_path, tiny, no_unpickling, weights):
    model, tokenizer = tiny
    folder = tmp_path / "folder"
    folder.mkdir()
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if weights is not None:
        (folder / weights).write_bytes(b"not read")
    with pytest.raises(UnlearnkitError) as caught:
        load_causal_lm(folder)
    message = str(caught.value)
    assert "\n" not in message
    if weights is None:
        assert f"model folder {folder} has no weights" in message
    else:
        assert f"holds only pickled weights ({weights})" in message


def test_a_hub_id_is_loaded_with_use_safetensors_and_its_refusal_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(load_module, "load_tokenizer", lambda *args, **kwargs: None)
    seen = {}

    def hub_without_safetensors(name, **kwargs):
        seen.update(kwargs)
        raise OSError(f"{name} does not appear to have a file named model.safetensors.\nCheckout the repository")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", hub_without_safetensors)
    with pytest.raises(UnlearnkitError) as caught:
        load_causal_lm("some-org/pickled-model")
    assert seen["use_safetensors"] is True
    assert "\n" not in str(caught.value)
    assert "safetensors" in str(caught.value)


def test_the_quantization_reload_reads_safetensors_only(tiny, monkeypatch):
    model, _ = tiny
    seen = {}

    def reload(folder, **kwargs):
        seen.update(kwargs)
        seen["files"] = sorted(p.name for p in Path(folder).iterdir())
        return model

    monkeypatch.setattr(LlamaForCausalLM, "from_pretrained", reload)
    monkeypatch.setattr(quantize_module, "_bitsandbytes_config", lambda *args: None)
    quantize_module.quantize_model(model, "int8")
    assert seen["use_safetensors"] is True
    assert "model.safetensors" in seen["files"]
