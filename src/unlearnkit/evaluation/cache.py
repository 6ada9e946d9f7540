"""Evaluation results of fixed models (the target and retain models), cached on disk.

The target and retain models of a task do not change between runs, so their TOFU evaluation is computed once and
kept in ``<cache>/evals/<key>.json``; the key covers the model's files, the task's evaluation data, the formatting
and the evaluation settings. A second run with the same models only evaluates the unlearned model. Underneath, the
scores and generations go to the result store (``<cache>/scores``), so an interrupted evaluation resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import Task
from unlearnkit.evaluation.distributed import world
from unlearnkit.evaluation.suite import EvalResult, evaluate_tofu
from unlearnkit.models.bases import folder_fingerprint
from unlearnkit.models.load import load_causal_lm
from unlearnkit.models.prepare import default_cache_dir
from unlearnkit.runio import write_json

EVAL_CACHE_VERSION = 1


def model_fingerprint(folder: Path) -> str:
    return f"{Path(folder).resolve()}:{folder_fingerprint(Path(folder))}"


def eval_key(model_dir: Path, task: Task, formatter: QAFormatter, settings: dict) -> str:
    splits = {name: [asdict(e) for e in getattr(task, name)]
              for name in ("eval_forget", "eval_retain", "real_authors", "world_facts", "holdout")}
    blob = json.dumps({"version": EVAL_CACHE_VERSION, "model": model_fingerprint(model_dir), "splits": splits,
                       "template": formatter.use_chat, "max_length": formatter.max_length, "settings": settings},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def evaluate_cached(model_dir: Path, task: Task, formatter: QAFormatter, settings: dict,
                    trust_remote_code: bool = False, progress: bool = True, cache_dir: Path | None = None) -> EvalResult:
    """``evaluate_tofu`` of the model saved in ``model_dir`` (no reference), from the cache when possible."""
    path = Path(cache_dir or default_cache_dir()) / "evals" / f"{eval_key(model_dir, task, formatter, settings)}.json"
    if path.exists():
        return EvalResult(**json.loads(path.read_text()))
    model, _ = load_causal_lm(model_dir, trust_remote_code=trust_remote_code)
    result = evaluate_tofu(model, formatter, task, reference=None, progress=progress,
                           store_root=Path(cache_dir or default_cache_dir()) / "scores", **settings)
    if world()[0] == 0:  # in a process group every rank computed the same result; one writes it
        write_json(path, result.to_dict())
    return result
