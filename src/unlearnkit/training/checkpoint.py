"""Checkpoints of a training run: ``output_dir/checkpoints/<name>/``, written whole or not at all.

A checkpoint folder holds

- ``model.safetensors``: the model's state dict (tied weights stored once, via ``safetensors.torch.save_model``);
- ``optimizer.pt``: the optimizer state (``torch.save``; read back with ``weights_only=True``);
- ``state.json``: step, epoch, config, number of processes, the method and its parameters, the scheduler state
  and the per-step logs so far;
- ``method_state.json`` (+ ``method_state.safetensors`` for its tensors): what the method's loss carries from step
  to step (:meth:`unlearnkit.methods.base.UnlearningMethod.state_dict`, e.g. PDU's dual variable), only for a
  method that has such state.

A sharded run (FSDP, DeepSpeed: :mod:`unlearnkit.training.engines`) writes, instead of the first two files, what
its engine writes from every process (``shards/``: torch.distributed.checkpoint files, or accelerate's
``save_state`` folder), through :func:`save_sharded_checkpoint`.

No random-number state is stored: the loop reseeds every micro-batch from (seed, step, slot), so a resumed run
draws the same numbers as an uninterrupted one.

Each checkpoint is written into a hidden temporary folder and then renamed, so a run killed while saving never
leaves a half-written checkpoint behind; a folder without the leading dot is always complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from unlearnkit.errors import UnlearnkitError

CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
METHOD_STATE_FILE = "method_state.json"
METHOD_TENSORS_FILE = "method_state.safetensors"
SHARDS_DIR = "shards"


def checkpoints_root(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints under ``output_dir``, oldest (fewest steps) first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: json.loads((p / STATE_FILE).read_text())["step"])


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def remove_unfinished_checkpoints(output_dir: Path) -> None:
    """Delete the temporary folders a killed run may have left while saving. Call from one process only."""
    root = checkpoints_root(output_dir)
    if root.is_dir():
        for leftover in root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(output_dir: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict, method=None) -> Path:
    """Write checkpoint ``name`` (e.g. ``epoch-2``) atomically and return its folder. Call from one process only.

    ``method`` (an :class:`~unlearnkit.methods.base.UnlearningMethod`): its ``state_dict()`` is saved too.
    """
    root = checkpoints_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    temporary = root / f".tmp-{name}-{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    save_model(model, str(temporary / MODEL_FILE))
    torch.save(optimizer.state_dict(), temporary / OPTIMIZER_FILE)
    if method is not None:
        _save_method_state(temporary, method.state_dict())
    (temporary / STATE_FILE).write_text(json.dumps(state, indent=1))
    if final.exists():  # only when a run is re-saved under the same name: keep a complete copy until the swap
        stale = root / f".stale-{name}-{os.getpid()}"
        os.replace(final, stale)
        os.replace(temporary, final)
        shutil.rmtree(stale)
    else:
        os.replace(temporary, final)
    return final


def save_sharded_checkpoint(output_dir: Path, name: str, write_shards, state: dict, method, is_main: bool,
                            barrier) -> Path:
    """Checkpoint ``name`` whose weights and optimizer state every process writes: ``write_shards(folder)`` runs in
    every process on one temporary folder; the main process adds ``state.json`` (and the method's state) and renames
    it into place. Call from every process; returns the final folder."""
    root = checkpoints_root(output_dir)
    final = root / name
    temporary = root / f".tmp-{name}-sharded"  # one name for every process
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir()
    barrier()
    write_shards(temporary / SHARDS_DIR)
    barrier()
    if is_main:
        if method is not None:
            _save_method_state(temporary, method.state_dict())
        (temporary / STATE_FILE).write_text(json.dumps(state, indent=1))
        if final.exists():
            stale = root / f".stale-{name}-{os.getpid()}"
            os.replace(final, stale)
            os.replace(temporary, final)
            shutil.rmtree(stale)
        else:
            os.replace(temporary, final)
    barrier()
    return final


def load_sharded_checkpoint(folder: Path, read_shards, method=None) -> dict:
    """``read_shards(folder / "shards")`` in every process, the method's state, and ``state.json``."""
    read_shards(Path(folder) / SHARDS_DIR)
    if method is not None:
        _load_method_state(Path(folder), method)
    return json.loads((Path(folder) / STATE_FILE).read_text())


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, method=None) -> dict:
    """Load weights, optimizer state (and ``method``'s state) from ``folder`` in place; return its ``state.json``."""
    device = next(model.parameters()).device
    load_model(model, str(folder / MODEL_FILE), strict=True, device=str(device))
    optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    if method is not None:
        _load_method_state(Path(folder), method)
    return json.loads((folder / STATE_FILE).read_text())


def _save_method_state(folder: Path, state: dict) -> None:
    """Tensors into ``method_state.safetensors``, everything else into ``method_state.json`` (nothing if empty)."""
    if not state:
        return
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    values = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    if tensors:
        save_file(tensors, str(folder / METHOD_TENSORS_FILE))
    (folder / METHOD_STATE_FILE).write_text(json.dumps({"values": values, "tensors": sorted(tensors)}, indent=1))


def _load_method_state(folder: Path, method) -> None:
    saved = folder / METHOD_STATE_FILE
    if not saved.is_file():
        if method.state_dict():
            raise UnlearnkitError(f"cannot resume: {folder} holds no state of method {method.name!r} (its dual "
                                  "variable or running averages); start over in a new output folder")
        return
    index = json.loads(saved.read_text())
    state = dict(index["values"])
    if index["tensors"]:
        state.update(load_file(str(folder / METHOD_TENSORS_FILE), device="cpu"))
    method.load_state_dict(state)
