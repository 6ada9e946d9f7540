"""Where unlearnkit keeps files, and writing them so that a crash or a kill never leaves a half-written one behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def default_cache_dir() -> Path:
    """Prepared models, scores and evaluation results: ``$UNLEARNKIT_CACHE``, else ``~/.cache/unlearnkit``."""
    return Path(os.environ.get("UNLEARNKIT_CACHE", Path.home() / ".cache" / "unlearnkit"))


def check_output_dir(output_dir: str | Path, resume: bool) -> Path:
    """The ``.partial`` folder a run writes ``output_dir`` through, once it is clear the run may start: an existing
    output is refused, and an interrupted run (its ``.partial`` folder) needs ``resume``. Reads no file, imports
    nothing heavy: ``unlearnkit run`` asks before torch is imported, ``pipeline.RunDirectory`` again before writing."""
    from unlearnkit.errors import RunDirectoryError

    final = Path(output_dir)
    partial = final.with_name(final.name + ".partial")
    if final.exists():
        raise RunDirectoryError(f"output directory {final} already exists: choose another (--output-dir) or delete it")
    if partial.exists() and not resume:
        raise RunDirectoryError(f"{partial} holds an interrupted run: pass --resume to continue it, or delete it")
    return partial


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: concurrent writers never mix
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=True))
    os.replace(tmp, path)
