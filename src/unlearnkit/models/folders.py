"""Checks of a model folder that read no weights and import neither torch nor transformers (issue #20: a mistyped
path or a damaged file is reported in a fraction of a second, before the heavy stack is imported).

A folder that does not exist (or a hub id while offline), a folder holding only pickled weights, a damaged
``config.json`` or ``*.safetensors`` header, a folder without a tokenizer: each is one line naming the file and the
fix, a :class:`ModelError`, or a :class:`CacheError` for a folder of unlearnkit's own cache (prepared models, built
bases), whose fix is to delete it so that it is rebuilt. :mod:`unlearnkit.models.load` runs them before loading;
:func:`check_model_folders` runs them on a run config's model folders.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from unlearnkit.errors import CacheError, ModelError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
BUILTIN_BASES = ("tiny", "smollm2-135m")  # built by models/bases.py, not folders
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
        try:  # numpy, not pt: the same header checks (length, JSON, coverage of the file) without importing torch
            with safe_open(str(weights), framework="numpy"):
                pass
        except Exception as exc:  # noqa: BLE001  SafetensorError (truncated, bad header) or OSError: either way unusable
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise _damaged(folder, f"{weights}: damaged safetensors file ({reason})") from None


def _is_path(text: str) -> bool:
    """``text`` can only be a local path, never a hub id (``name`` or ``org/name``)."""
    path = Path(text)
    return (path.is_absolute() or text.startswith(".") or text.endswith(("/", os.sep)) or path.exists()
            or text.count("/") > 1 or (os.altsep is not None and os.altsep in text) or not text.strip())


def _missing_model_message(name_or_path: str | Path) -> str | None:
    """The one line for a model that is neither a folder here nor fetchable; None when it may be a hub id online."""
    text = str(name_or_path)
    path = Path(name_or_path)
    if _is_path(text):
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


def check_model_folder(name_or_path: str | Path) -> None:
    """Everything :func:`~unlearnkit.models.load.load_causal_lm` checks before it loads: the folder exists (or may be
    a hub id, online), holds safetensors weights that open, a ``config.json`` that parses, and a tokenizer."""
    path = Path(name_or_path)
    if not path.is_dir():
        message = _missing_model_message(name_or_path)
        if message is not None:
            raise ModelError(message)
        return  # a hub id, looked up when loaded
    check_safetensors_weights(path)
    check_model_files(path)
    check_tokenizer_files(path)


def check_tokenizer_files(path: Path) -> None:
    if not any((path / f).exists() for f in TOKENIZER_FILES):
        raise ModelError(
            f"model folder {path} has no tokenizer: save the tokenizer there too (tokenizer.save_pretrained('{path}'))"
        )


def check_model_folders(cfg) -> None:
    """The model folders a run config (:class:`~unlearnkit.config.RunConfig`) names: ``model.target`` and
    ``model.retain`` when given, else ``model.base`` when it is a path (not a built-in base or a hub id)."""
    if cfg.model.target:
        for given in (cfg.model.target, cfg.model.retain):
            if given:
                check_model_folder(given)
    elif cfg.model.base not in BUILTIN_BASES and _is_path(cfg.model.base):
        check_model_folder(cfg.model.base)  # a hub id is left alone: the prepared models may be cached without it
