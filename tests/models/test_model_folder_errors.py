"""Damaged or missing model folders through the Python API (issue #20): one UnlearnkitError line naming the file
and the fix — a garbage config.json (file, line, column), damaged safetensors weights, a cached prepared model
(delete it and prepare again), a path that does not exist (as typed, never a repr)."""

from pathlib import Path

import pytest

from unlearnkit.errors import UnlearnkitError
from unlearnkit.models.load import load_causal_lm, save_model
from unlearnkit.models.tiny import build_tiny


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(["the cat sat on the mat"] * 4, vocab_size=300, hidden_size=32, layers=1, heads=2)


def _error(name_or_path) -> str:
    with pytest.raises(UnlearnkitError) as caught:
        load_causal_lm(name_or_path)
    message = str(caught.value)
    assert "\n" not in message and "PosixPath" not in message, message
    return message


def test_garbage_config_json_names_file_line_column_and_fix(tmp_path, tiny):
    folder = tmp_path / "m"
    save_model(*tiny, folder)
    (folder / "config.json").write_text('{"model_type": "llama",\n "vocab_size": 300,,\n}\n')
    assert _error(folder) == (f"{folder}/config.json, line 2, column 20: unreadable JSON (Expecting property name "
                              "enclosed in double quotes): re-save the model with save_pretrained")


def test_non_utf8_config_json(tmp_path, tiny):
    folder = tmp_path / "m"
    save_model(*tiny, folder)
    (folder / "config.json").write_bytes(b'{"model_type": "ll\xe9ma"}')
    assert _error(folder).startswith(f"{folder}/config.json: not UTF-8 text (offset 18)")


@pytest.mark.parametrize("damage", ["truncated", "empty", "header"])
def test_damaged_safetensors_names_the_file(tmp_path, tiny, damage):
    folder = tmp_path / "m"
    save_model(*tiny, folder)
    weights = folder / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes({"truncated": raw[: len(raw) // 2], "empty": b"",
                         "header": raw[:8] + b"\x00garbage" + raw[16:]}[damage])
    message = _error(folder)
    assert message.startswith(f"{weights}: damaged safetensors file ("), message
    assert message.endswith("): re-save the model with save_pretrained"), message


def test_damaged_prepared_model_in_the_cache_says_prepare_again(tmp_path, tiny):
    folder = tmp_path / "cache" / "prepared" / "0123abcd" / "target"
    save_model(*tiny, folder)
    (folder / "config.json").write_text("not json")
    message = _error(folder)
    assert message.startswith(f"{folder}/config.json, line 1, column 1: unreadable JSON"), message
    assert message.endswith(f"delete {folder.parent} and run `unlearnkit prepare` again"), message
    weights = folder / "model.safetensors"
    save_model(*tiny, folder)
    weights.write_bytes(weights.read_bytes()[:100])
    assert _error(folder).endswith(f"delete {folder.parent} and run `unlearnkit prepare` again")


def test_missing_paths_are_named_as_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for typed in ("./models/x", "models/typo/x", "models/x/", str(tmp_path / "nope"), Path("a/b/c")):
        assert _error(typed) == f"model folder {typed} does not exist: check the path"
    assert _error("models/x") == ("no folder models/x here, and HF_HUB_OFFLINE=1 so it is not looked up on the hub: "
                                  "check the path, or download the model")
    assert _error(Path("org") / "name").startswith("no folder org/name here")
    assert _error("gpt2").startswith("no folder gpt2 here, and HF_HUB_OFFLINE=1")


def test_a_file_instead_of_a_folder(tmp_path, tiny):
    folder = tmp_path / "m"
    save_model(*tiny, folder)
    assert _error(folder / "config.json") == (f"model path {folder / 'config.json'} is a file, not a folder: pass the "
                                              "folder written by save_pretrained")


def test_a_sound_folder_still_loads(tmp_path, tiny):
    folder = tmp_path / "m"
    save_model(*tiny, folder)
    model, tokenizer = load_causal_lm(folder)
    assert model.config.vocab_size == tiny[0].config.vocab_size and tokenizer.eos_token_id is not None
