"""Load any Hugging Face causal LM with its tokenizer, from a local folder or a hub id.

Checks what users get wrong before the slow part: a folder that does not exist, a folder without a tokenizer, a hub
id while offline, a damaged ``config.json`` or ``*.safetensors`` file (each one line naming the file and the fix). ``trust_remote_code`` stays off unless asked for. Weights are read from safetensors only
(``use_safetensors=True``): pickled weights (``pytorch_model.bin``, ``*.pt``...) are never unpickled; a folder holding
only those is refused with the one-off conversion to run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from unlearnkit.errors import CacheError, ModelError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model-*.bin", "*.pt", "*.pth", "*.ckpt")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def check_safetensors_weights(folder: Path) -> None:
    """Refuse, in one line, a model folder without safetensors weights; nothing in it is read."""
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted({f.name for pattern in PICKLED_WEIGHTS for f in folder.glob(pattern) if f.is_file()})
    if pickled:
        raise ModelError(
            f"model folder {folder} holds only pickled weights ({', '.join(pickled)}); unlearnkit reads safetensors "
            f"only: convert once with  python -c \"from transformers import AutoModelForCausalLM as M; "
            f"M.from_pretrained('{folder}').save_pretrained('{folder}', safe_serialization=True)\""
        )
    raise ModelError(
        f"model folder {folder} has no weights (no *.safetensors file): pass a folder written by save_pretrained"
    )


def _refresh_fix(folder: Path) -> str:
    """How to get a sound copy of ``folder``: prepare a cached prepared model again, else re-save the model."""
    if folder.parent.parent.name == "prepared":  # <cache>/prepared/<hash>/{target,retain}
        return f"delete {folder.parent} and run `unlearnkit prepare` again"
    if folder.parent.name == "bases":  # <cache>/bases/<name>: rebuilt when missing
        return f"delete {folder} and run again (the base is rebuilt)"
    return "re-save the model with save_pretrained"


def _damaged(folder: Path, message: str) -> ModelError | CacheError:
    """A :class:`CacheError` for a folder unlearnkit cached itself (prepared models, built bases), else a
    :class:`ModelError`."""
    cached = folder.parent.parent.name == "prepared" or folder.parent.name == "bases"
    return (CacheError if cached else ModelError)(f"{message}: {_refresh_fix(folder)}")


def check_model_files(folder: Path) -> None:
    """Refuse, in one line, a folder whose ``config.json`` is not JSON or whose safetensors files are damaged
    (truncated, or a header that does not parse); only the config and the safetensors headers are read."""
    config = folder / "config.json"
    if config.is_file():
        try:
            json.loads(config.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _damaged(folder, f"{config}: not UTF-8 text (offset {exc.start}), so not a model config") from None
        except json.JSONDecodeError as err:
            raise _damaged(folder, f"{config}, line {err.lineno}, column {err.colno}: unreadable JSON ({err.msg})") from None
    from safetensors import safe_open

    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except Exception as exc:  # SafetensorError (truncated, bad header) or OSError: either way unusable
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise _damaged(folder, f"{weights}: damaged safetensors file ({reason})") from None


def _missing_model_message(name_or_path: str | Path) -> str | None:
    """The one line for a model that is neither a folder here nor fetchable; None when it may be a hub id online."""
    text = str(name_or_path)
    path = Path(name_or_path)
    is_path = (path.is_absolute() or text.startswith(".") or text.endswith(("/", os.sep)) or path.exists()
               or text.count("/") > 1 or (os.altsep is not None and os.altsep in text) or not text.strip())
    if is_path:
        if path.exists() and not path.is_dir():
            return f"model path {text} is a file, not a folder: pass the folder written by save_pretrained"
        return f"model folder {text} does not exist: check the path"
    if is_offline():
        if "/" in text:  # org/name: a relative folder or a hub id
            return (f"no folder {text} here, and HF_HUB_OFFLINE=1 so it is not looked up on the hub: check the path, "
                    "or download the model")
        return (f"no folder {text} here, and HF_HUB_OFFLINE=1 so it is not looked up on the hub: check the name, or "
                "download the model")
    return None


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False, gguf_file: str | None = None):
    path = Path(name_or_path)
    if path.is_dir() and gguf_file is None and not any((path / f).exists() for f in TOKENIZER_FILES):
        raise ModelError(
            f"model folder {path} has no tokenizer: save the tokenizer there too (tokenizer.save_pretrained('{path}'))"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code, gguf_file=gguf_file)
    if tokenizer.eos_token_id is None:
        raise ModelError(f"the tokenizer of {name_or_path} has no eos_token: set one and save it again")
    if tokenizer.pad_token_id is None:
        # only ever used as filler: labels are built from token lists (data/formatting.py), never from pad positions
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str | Path, trust_remote_code: bool = False, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for a local folder or a hub id."""
    path = Path(name_or_path)
    if not path.is_dir():
        message = _missing_model_message(name_or_path)
        if message is not None:
            raise ModelError(message)
    if path.is_dir():
        check_safetensors_weights(path)
        check_model_files(path)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    try:
        # use_safetensors=True: a hub repo with only pickled weights is refused too, never unpickled
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            str(name_or_path), trust_remote_code=trust_remote_code, dtype=dtype, use_safetensors=True
        )
    except OSError as exc:
        raise ModelError(
            f"could not load a causal LM from {name_or_path} (unlearnkit reads safetensors weights only): {exc}"
            .splitlines()[0]
        ) from exc
    return model, tokenizer


def save_model(model, tokenizer, folder: Path) -> None:
    """safetensors weights, config and tokenizer in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
