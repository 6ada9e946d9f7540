"""Load any Hugging Face causal LM with its tokenizer, from a local folder or a hub id.

Checks what users get wrong before the slow part (:mod:`unlearnkit.models.folders`): a folder that does not exist, a
folder without a tokenizer, a hub id while offline, a damaged ``config.json`` or ``*.safetensors`` file (each one line
naming the file and the fix). ``trust_remote_code`` stays off unless asked for. Weights are read from safetensors only
(``use_safetensors=True``): pickled weights (``pytorch_model.bin``, ``*.pt``...) are never unpickled; a folder holding
only those is refused with the one-off conversion to run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from unlearnkit.errors import ModelError
from unlearnkit.models.folders import check_model_folder, check_tokenizer_files


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False, gguf_file: str | None = None):
    path = Path(name_or_path)
    if path.is_dir() and gguf_file is None:
        check_tokenizer_files(path)
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code, gguf_file=gguf_file)
    if tokenizer.eos_token_id is None:
        raise ModelError(f"the tokenizer of {name_or_path} has no eos_token: set one and save it again")
    if tokenizer.pad_token_id is None:
        # only ever used as filler: labels are built from token lists (data/formatting.py), never from pad positions
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str | Path, trust_remote_code: bool = False, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for a local folder or a hub id."""
    check_model_folder(name_or_path)
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
