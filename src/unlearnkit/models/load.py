"""Load any Hugging Face causal LM with its tokenizer, from a local folder or a hub id.

Checks what users get wrong before the slow part: a folder that does not exist, a folder without a tokenizer, a hub
id while offline. ``trust_remote_code`` stays off unless asked for. Weights are read from safetensors only
(``use_safetensors=True``): pickled weights (``pytorch_model.bin``, ``*.pt``...) are never unpickled; a folder holding
only those is refused with the one-off conversion to run.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from unlearnkit.errors import UnlearnkitError

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
        raise UnlearnkitError(
            f"model folder {folder} holds only pickled weights ({', '.join(pickled)}); unlearnkit reads safetensors "
            f"only: convert once with  python -c \"from transformers import AutoModelForCausalLM as M; "
            f"M.from_pretrained('{folder}').save_pretrained('{folder}', safe_serialization=True)\""
        )
    raise UnlearnkitError(
        f"model folder {folder} has no weights (no *.safetensors file): pass a folder written by save_pretrained"
    )


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False, gguf_file: str | None = None):
    path = Path(name_or_path)
    if path.is_dir() and gguf_file is None and not any((path / f).exists() for f in TOKENIZER_FILES):
        raise UnlearnkitError(
            f"model folder {path} has no tokenizer: save the tokenizer there too (tokenizer.save_pretrained('{path}'))"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code, gguf_file=gguf_file)
    if tokenizer.eos_token_id is None:
        raise UnlearnkitError(f"the tokenizer of {name_or_path} has no eos_token: set one and save it again")
    if tokenizer.pad_token_id is None:
        # only ever used as filler: labels are built from token lists (data/formatting.py), never from pad positions
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str | Path, trust_remote_code: bool = False, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for a local folder or a hub id."""
    path = Path(name_or_path)
    looks_local = path.is_absolute() or str(name_or_path).startswith(".") or path.exists()
    if looks_local and not path.is_dir():
        raise UnlearnkitError(f"model folder {path} does not exist: pass a folder written by save_pretrained, or a hub id")
    if not path.is_dir() and is_offline():
        raise UnlearnkitError(
            f"{name_or_path!r} is not a local folder and HF_HUB_OFFLINE=1: download it first, or pass a local model folder"
        )
    if path.is_dir():
        check_safetensors_weights(path)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    try:
        # use_safetensors=True: a hub repo with only pickled weights is refused too, never unpickled
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
            str(name_or_path), trust_remote_code=trust_remote_code, dtype=dtype, use_safetensors=True
        )
    except OSError as exc:
        raise UnlearnkitError(
            f"could not load a causal LM from {name_or_path!r} (unlearnkit reads safetensors weights only): {exc}"
            .splitlines()[0]
        ) from exc
    return model, tokenizer


def save_model(model, tokenizer, folder: Path) -> None:
    """safetensors weights, config and tokenizer in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
