"""Evaluation results of fixed models (the target and retain models), cached on disk: keys, reading, writing.

The target and retain models of a task do not change between runs, so their evaluation (TOFU or MUSE suite, see
:func:`unlearnkit.evaluation.evaluator.evaluate_task_cached`) is computed once and kept in
``<cache>/evals/<key>.json``; the key covers the model's files, the task's evaluation data, the formatting and the
evaluation settings. A second run with the same models only evaluates the unlearned model. Underneath, the scores
and generations go to the result store (``<cache>/scores``), so an interrupted evaluation resumes. Pooled
representation features, when asked for, are kept beside the JSON in ``<key>.features.npz``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from unlearnkit.data.corpus import CorpusTask
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import Task
from unlearnkit.evaluation.scoring.distributed import world
from unlearnkit.evaluation.scoring.pooling import FeatureSpec
from unlearnkit.evaluation.suites.result import EvalResult
from unlearnkit.models.bases import folder_fingerprint
from unlearnkit.runio import write_json

EVAL_CACHE_VERSION = 6  # 2: generation batches by answer length; 3: answers scored on their prompt's KV cache;
# 4: generation starts after the gold prefix, answers with and without Min-K%++ moments share batches;
# 5: the opening all prompts share runs once, prompts of different lengths share batches;
# 6: the tokens several answers start with run once, in levels


def model_fingerprint(folder: Path) -> str:
    return f"{Path(folder).resolve()}:{folder_fingerprint(Path(folder))}"


def eval_key(model_dir: Path, task: Task | CorpusTask, formatter: QAFormatter, settings: dict,
             features: FeatureSpec | None = None) -> str:
    """The cache key of one model's evaluation on ``task`` (a QA task's evaluation splits, or a whole corpus task)."""
    if isinstance(task, CorpusTask):
        data = {"suite": "muse", "task": asdict(task), "batch_size": settings["batch_size"]}
    else:
        data = {"splits": {name: [asdict(e) for e in getattr(task, name)]
                           for name in ("eval_forget", "eval_retain", "real_authors", "world_facts", "holdout")},
                "settings": settings}
    blob = json.dumps({"version": EVAL_CACHE_VERSION, "model": model_fingerprint(model_dir), **data,
                       "template": formatter.use_chat, "max_length": formatter.max_length,
                       **({"features": features.settings()} if features is not None else {})},
                      sort_keys=True)
    prefix = "muse-" if isinstance(task, CorpusTask) else ""
    return prefix + hashlib.sha256(blob.encode()).hexdigest()[:24]


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
