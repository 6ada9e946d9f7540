"""Evaluation results of fixed models (the target and retain models), cached on disk.

The target and retain models of a task do not change between runs, so their TOFU evaluation is computed once and
kept in ``<cache>/evals/<key>.json``; the key covers the model's files, the task's evaluation data, the formatting
and the evaluation settings. A second run with the same models only evaluates the unlearned model. Underneath, the
scores and generations go to the result store (``<cache>/scores``), so an interrupted evaluation resumes. Pooled
representation features, when asked for, are kept beside the JSON in ``<key>.features.npz``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import Task
from unlearnkit.evaluation.distributed import world
from unlearnkit.evaluation.pooling import FeatureSpec
from unlearnkit.evaluation.suite import EvalResult, evaluate_tofu
from unlearnkit.models.bases import folder_fingerprint
from unlearnkit.models.load import load_causal_lm
from unlearnkit.models.prepare import default_cache_dir
from unlearnkit.runio import write_json

EVAL_CACHE_VERSION = 2  # 2: generation batches by answer length


def model_fingerprint(folder: Path) -> str:
    return f"{Path(folder).resolve()}:{folder_fingerprint(Path(folder))}"


def eval_key(model_dir: Path, task: Task, formatter: QAFormatter, settings: dict,
             features: FeatureSpec | None = None) -> str:
    splits = {name: [asdict(e) for e in getattr(task, name)]
              for name in ("eval_forget", "eval_retain", "real_authors", "world_facts", "holdout")}
    blob = json.dumps({"version": EVAL_CACHE_VERSION, "model": model_fingerprint(model_dir), "splits": splits,
                       "template": formatter.use_chat, "max_length": formatter.max_length, "settings": settings,
                       **({"features": features.settings()} if features is not None else {})},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def evaluate_cached(model_dir: Path, task: Task, formatter: QAFormatter, settings: dict,
                    trust_remote_code: bool = False, progress: bool = True, cache_dir: Path | None = None,
                    features: FeatureSpec | None = None) -> EvalResult:
    """``evaluate_tofu`` of the model saved in ``model_dir`` (no reference), from the cache when possible.

    ``features`` also pools the representation splits' hidden states in the same pass (``EvalResult.features``).
    """
    cache = Path(cache_dir or default_cache_dir())
    path = cache / "evals" / f"{eval_key(model_dir, task, formatter, settings, features)}.json"
    result = read_cached(path, features)
    if result is None:
        model, _ = load_causal_lm(model_dir, trust_remote_code=trust_remote_code)
        result = evaluate_tofu(model, formatter, task, reference=None, progress=progress, store_root=cache / "scores",
                               features=features, **settings)
        write_cached(path, result, features)
    return result


def read_cached(path: Path, features: FeatureSpec | None) -> EvalResult | None:
    """The result cached at ``path`` (with its features when asked for), or None when it is not all there."""
    arrays = path.with_suffix(".features.npz")
    if not path.exists() or (features is not None and not arrays.exists()):
        return None
    result = EvalResult(**json.loads(path.read_text()))
    if features is not None:
        with np.load(arrays) as stored:
            result.features = {split: stored[split] for split in stored.files}
    return result


def write_cached(path: Path, result: EvalResult, features: FeatureSpec | None) -> None:
    """Cache ``result`` at ``path`` (features beside it); in a process group every rank has it, the main one writes."""
    if world()[0] != 0:
        return
    if features is not None:  # the arrays first: a JSON without its arrays is never read as complete
        arrays = path.with_suffix(".features.npz")
        arrays.parent.mkdir(parents=True, exist_ok=True)
        partial = arrays.with_name(arrays.name + ".partial.npz")
        np.savez(partial, **result.features)
        partial.replace(arrays)
    write_json(path, result.to_dict())
