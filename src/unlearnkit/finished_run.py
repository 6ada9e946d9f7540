"""Reading a finished run directory back (``unlearnkit attack``, ``compare``, ``verify``): its config and its
``results.json``, each problem a one-line :class:`RunDirectoryError` naming the folder or file as typed.

Light on purpose (no torch, no evaluation code): the commands call it before importing the heavy stack, so that a
mistyped or incomplete run directory is reported in a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from unlearnkit.config import RunConfig, load_config
from unlearnkit.errors import RunDirectoryError


def load_results(run_dir: Path) -> dict:
    """A run's ``results.json``; a missing folder or file, or an unreadable one, is a one-line error naming it."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirectoryError(f"run directory {run_dir} does not exist: pass a run directory written by `unlearnkit run`")
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir} is not a directory: pass a run directory written by `unlearnkit run`")
    path = run_dir / "results.json"
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} has no results.json: pass a finished run directory (written by `unlearnkit run`)")
    try:
        results = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RunDirectoryError(f"{path}: not UTF-8 text (offset {exc.start}): the file is damaged: run again, or "
                              "restore it") from None
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"{path}, line {exc.lineno}, column {exc.colno}: unreadable JSON ({exc.msg}): the "
                              "file is damaged: run again, or restore it") from None
    if not isinstance(results, dict):
        raise RunDirectoryError(f"{path} holds a JSON {type(results).__name__}, not the results object: run again, "
                              "or restore it")
    return results


def load_run(run_dir: Path) -> tuple[RunConfig, dict]:
    """A finished run's config and results; a missing folder or file, or an unreadable one, is a one-line error."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirectoryError(f"run directory {run_dir} does not exist: pass a run directory written by `unlearnkit run`")
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir} is not a directory: pass a run directory written by `unlearnkit run`")
    for name in ("config.yaml", "results.json", "model"):
        if not (run_dir / name).exists():
            raise RunDirectoryError(f"{run_dir} has no {name}: pass a finished run directory written by `unlearnkit run`")
    return load_config(run_dir / "config.yaml"), load_results(run_dir)
