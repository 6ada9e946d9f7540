"""``unlearnkit export RUN_DIR --to DIR``: the unlearned model's folder with its model card and audit record.

DIR gets the files of ``RUN_DIR/model`` (weights, config, tokenizer, and the card ``README.md``, rendered from the
run's config, results and audit record when the run has no card yet) and ``audit.json``; for an inference-time
method (GUARD-IT), also ``inference/``, the transform that the unchanged weights need
(``inference/artifact.json`` names the method and its parameters;
:func:`unlearnkit.models.unlearned.load_artifact` of the exported folder and the method's ``apply`` install it). An existing DIR must be
empty: nothing of the user's is overwritten. The folder is written beside DIR and renamed into place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from unlearnkit.audit import AUDIT_FILE, load_audit
from unlearnkit.errors import UnlearnkitError
from unlearnkit.report.model_card import CARD_FILE, write_card
from unlearnkit.runio import atomic_dir


def export_run(run_dir: Path, to: Path) -> Path:
    run_dir, to = Path(run_dir), Path(to)
    model = run_dir / "model"
    if not model.is_dir() or not (run_dir / "results.json").exists():
        raise UnlearnkitError(f"{run_dir} is not a finished run directory (no model/ or results.json): pass a run "
                              "directory written by `unlearnkit run`")
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise UnlearnkitError(f"{to} already exists and is not an empty folder: choose a new folder for --to")
    audit = load_audit(run_dir)
    with atomic_dir(to) as tmp:
        for item in model.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        if not (tmp / CARD_FILE).exists():
            from unlearnkit.config import load_config

            write_card(tmp, load_config(run_dir / "config.yaml"), json.loads((run_dir / "results.json").read_text()),
                       audit)
        shutil.copy2(run_dir / AUDIT_FILE, tmp / AUDIT_FILE)
        if (run_dir / "inference").is_dir():  # an inference-time method's artifact: the weights alone are the target
            shutil.copytree(run_dir / "inference", tmp / "inference")
    return to
