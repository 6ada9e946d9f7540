"""A run's unlearned model, saved and loaded the same way by every command that reads it.

A run keeps its unlearned model in ``model/`` (safetensors weights, config, tokenizer). A run of an inference-time
method (:class:`~unlearnkit.methods.base.InferenceMethod`, e.g. GUARD-IT) changes no weight: ``model/`` holds the
target's weights unchanged (so ``verify``, ``export`` and any other reader find a complete model folder, even once
the cached target is gone), and ``inference/`` holds what turns it into the unlearned model:

- ``inference/artifact.safetensors``: the transform's tensors;
- ``inference/artifact.json``: ``{"method", "params", "fit"}``, the method that made it, its parameters and what
  fitting logged.

:func:`load_unlearned` is "the unlearned model of a run" for evaluation, verification and the attacks: the weights,
with the transform installed when there is one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from unlearnkit.errors import RunDirectoryError
from unlearnkit.methods.base import InferenceMethod, installed_transform, weights_only
from unlearnkit.models.load import load_causal_lm
from unlearnkit.runio import write_json

INFERENCE_DIR = "inference"
ARTIFACT = "artifact.safetensors"
ARTIFACT_INFO = "artifact.json"


def save_unlearned(model: nn.Module, tokenizer, run_dir: Path) -> None:
    """``run_dir/model``: the model's own weights (an installed inference-time transform left out: it is saved by
    :func:`save_artifact`), config and tokenizer."""
    folder = Path(run_dir) / "model"
    folder.mkdir(parents=True, exist_ok=True)
    state = weights_only(model) if installed_transform(model) is not None else None
    model.save_pretrained(folder, safe_serialization=True, **({"state_dict": state} if state is not None else {}))
    tokenizer.save_pretrained(folder)


def save_artifact(run_dir: Path, method: InferenceMethod, artifact: dict[str, torch.Tensor], fit_logs: dict) -> Path:
    """Write ``run_dir/inference/`` (tensors first, then the JSON, each through a temporary name)."""
    from safetensors.torch import save_file

    folder = Path(run_dir) / INFERENCE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{ARTIFACT}.{os.getpid()}.tmp"
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in artifact.items()}, str(tmp))
    os.replace(tmp, folder / ARTIFACT)
    write_json(folder / ARTIFACT_INFO, {"method": method.name, "params": method.params(), "fit": fit_logs})
    return folder


def load_artifact(run_dir: Path) -> tuple[InferenceMethod, dict[str, torch.Tensor]] | None:
    """The inference method and artifact a run saved, or None for a run whose weights are its unlearned model."""
    folder = Path(run_dir) / INFERENCE_DIR
    if not folder.exists():
        return None
    from safetensors.torch import load_file

    from unlearnkit.methods.registry import get_method

    tensors, info = folder / ARTIFACT, folder / ARTIFACT_INFO
    if not tensors.is_file() or not info.is_file():
        raise RunDirectoryError(f"{folder} lacks {ARTIFACT} or {ARTIFACT_INFO}: the run's inference-time artifact "
                                "is incomplete: run it again")
    try:
        saved = json.loads(info.read_text())
        method = get_method(saved["method"], **saved["params"])
        artifact = load_file(str(tensors))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunDirectoryError(f"{folder}: unreadable inference-time artifact ({exc}): run it again") from None
    if not isinstance(method, InferenceMethod):
        raise RunDirectoryError(f"{info} names {saved['method']!r}, which is not an inference-time method: the "
                                "file is damaged: run again")
    return method, artifact


def load_unlearned(run_dir: Path, trust_remote_code: bool = False):
    """(model, tokenizer): the run's unlearned model, its inference-time transform installed when it has one."""
    model, tokenizer = load_causal_lm(Path(run_dir) / "model", trust_remote_code=trust_remote_code)
    saved = load_artifact(run_dir)
    if saved is not None:
        method, artifact = saved
        method.apply(model, artifact)
    return model.eval(), tokenizer
