"""A stored weight update: what unlearning changed, saved so that it can be added to another model later.

A method that sets ``stores_update = True`` (K-FADE) gets ``update.safetensors`` in its run directory: for every
weight of the kept model that differs from the target's, the difference (unlearned − target, float32), nothing else.
Computing it from the two models instead of from the method's own steps makes it exact whatever the optimizer did,
and right for the monitor's best checkpoint too. ``unlearnkit reapply RUN_DIR --model OTHER --output DIR``
(:func:`reapply`) adds it to another model of the same architecture (e.g. the target after further fine-tuning) and
saves the result; a weight the other model lacks, or one of another shape, stops it with a one-line error before
anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from unlearnkit.errors import UnlearnkitError

UPDATE_FILE = "update.safetensors"


def saved_weights(folder: Path) -> dict[str, Path]:
    """Which ``*.safetensors`` file of a saved model ``folder`` holds each tensor name."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise UnlearnkitError(f"{folder} holds no .safetensors weights: give a model saved with safetensors")
    where: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            where.update({name: file for name in handle.keys()})  # noqa: SIM118 (safe_open is not iterable)
    return where


def weight_update(model: nn.Module, target_folder: Path) -> dict[str, torch.Tensor]:
    """``{name: W_model − W_target}`` (float32, on the CPU) for each weight of ``model`` saved in ``target_folder``
    that differs from it; the target is read one tensor at a time."""
    where = saved_weights(target_folder)
    update: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        if name not in where:
            continue
        with safe_open(str(where[name]), framework="pt") as handle:
            before = handle.get_tensor(name)
        if before.shape != value.shape:
            raise UnlearnkitError(f"weight {name} has shape {tuple(value.shape)} but {tuple(before.shape)} in "
                                  f"{target_folder}: the update needs the target it was trained from")
        difference = value.detach().float().cpu() - before.float()
        if torch.count_nonzero(difference):
            update[name] = difference.contiguous()
    return update


def save_update(update: dict[str, torch.Tensor], folder: Path) -> Path:
    """Write ``update`` to ``folder/update.safetensors`` (a temporary name, then renamed)."""
    path = Path(folder) / UPDATE_FILE
    temporary = path.with_name(path.name + ".tmp")
    save_file(update, str(temporary), metadata={"format": "pt", "kind": "unlearnkit weight update"})
    os.replace(temporary, path)
    return path


def load_update(run_dir: Path) -> dict[str, torch.Tensor]:
    path = Path(run_dir) / UPDATE_FILE
    if not path.is_file():
        raise UnlearnkitError(f"{run_dir} has no {UPDATE_FILE}: reapply needs a run of a method that stores its "
                              "update (kfade)")
    return load_file(str(path))


def check_fits(update: dict[str, torch.Tensor], folder: Path) -> None:
    """Every weight of ``update`` is saved in the model ``folder`` with the same shape (read from the headers)."""
    where = saved_weights(folder)
    for name, delta in update.items():
        if name not in where:
            raise UnlearnkitError(f"{folder} has no weight {name}: reapply needs a model of the architecture the "
                                  "update was trained on")
        with safe_open(str(where[name]), framework="pt") as handle:
            shape = tuple(handle.get_slice(name).get_shape())
        if shape != tuple(delta.shape):
            raise UnlearnkitError(f"weight {name} has shape {shape} in {folder}, the update {tuple(delta.shape)}: "
                                  "reapply needs a model of the same architecture and size")


def apply_update(model: nn.Module, update: dict[str, torch.Tensor]) -> None:
    """Add ``update`` to ``model``'s weights in place, after checking every name and shape (nothing changes if one
    is wrong)."""
    state = model.state_dict()
    for name, delta in update.items():
        if name not in state:
            raise UnlearnkitError(f"the model has no weight {name}: reapply needs a model of the architecture the "
                                  "update was trained on")
        if state[name].shape != delta.shape:
            raise UnlearnkitError(f"weight {name} has shape {tuple(state[name].shape)}, the update "
                                  f"{tuple(delta.shape)}: reapply needs a model of the same architecture and size")
    with torch.no_grad():
        for name, delta in update.items():
            target = state[name]
            target.copy_((target.float() + delta.to(target.device)).to(target.dtype))


def reapply(run_dir: Path, model_path: Path, output: Path, trust_remote_code: bool = False) -> Path:
    """Add the update stored in ``run_dir`` to the model at ``model_path``; save model and tokenizer in ``output``."""
    from unlearnkit.models.load import load_causal_lm, save_model

    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise UnlearnkitError(f"{output} is not empty: choose a new folder for the re-applied model")
    update = load_update(run_dir)
    check_fits(update, model_path)  # from the files' headers, before the model is loaded
    model, tokenizer = load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    apply_update(model, update)
    temporary = output.with_name(output.name + ".partial")
    if temporary.exists():
        import shutil

        shutil.rmtree(temporary)
    save_model(model, tokenizer, temporary)
    if output.exists():
        output.rmdir()
    os.replace(temporary, output)
    return output
