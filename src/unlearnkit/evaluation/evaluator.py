"""The evaluation suite of a task: TOFU's for QA tasks, MUSE's for raw-text (corpus) tasks.

Runs, the training monitor and the cached baselines call these instead of choosing a suite themselves:
:func:`suite_metrics` names what can be asked for, :func:`evaluate_task` evaluates a model, and
:func:`evaluate_task_cached` evaluates a saved model once per (model, task, settings) — the target and retain
models of a run — keeping the result under ``<cache>/evals``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from unlearnkit.data.corpus import CorpusTask
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import Task
from unlearnkit.evaluation.cache import eval_key, read_cached, write_cached
from unlearnkit.evaluation.suites.muse import (
    MUSE_MIA_STATISTICS,
    MUSE_SUITE_METRICS,
    evaluate_muse_suite,
    resolve_muse_metrics,
)
from unlearnkit.evaluation.scoring.pooling import FeatureSpec
from unlearnkit.evaluation.suites.tofu import METRIC_NAMES, evaluate_tofu
from unlearnkit.evaluation.suites.result import EvalResult
from unlearnkit.models.load import load_causal_lm
from unlearnkit.models.prepare import default_cache_dir


def is_corpus(task: Task | CorpusTask) -> bool:
    return isinstance(task, CorpusTask)


def suite_metrics(task: Task | CorpusTask) -> tuple[str, ...]:
    """Every metric name the task's suite computes."""
    return tuple(MUSE_SUITE_METRICS) if is_corpus(task) else tuple(METRIC_NAMES)


def evaluate_task(model, formatter: QAFormatter, task: Task | CorpusTask, reference: dict | None, settings: dict,
                  metrics: Iterable[str] | None = None, progress: bool = True, store_root: Path | None = None,
                  features: FeatureSpec | None = None) -> EvalResult:
    """``evaluate_tofu`` or ``evaluate_muse_suite``; ``settings``: ``batch_size`` and (TOFU) ``max_new_tokens``.

    MUSE's generations have their own lengths (VerbMem 128, KnowMem 32 new tokens), so ``max_new_tokens`` is
    TOFU's only. ``features``: QA answers (TOFU) or text chunks (MUSE, pool ``"all"``). A raw-text task without
    holdout texts gets ``None`` for the membership metrics and privleak, as a QA task without holdout does.
    """
    metrics = set(metrics) if metrics is not None else None
    if is_corpus(task):
        wanted = resolve_muse_metrics(metrics)
        without_holdout = set()
        if not task.holdout:  # as the TOFU suite does: the membership metrics are None without holdout texts
            without_holdout = wanted & {*MUSE_MIA_STATISTICS, "privleak"}
        result = evaluate_muse_suite(model, formatter, task, reference=reference, metrics=wanted - without_holdout,
                                     batch_size=settings["batch_size"], progress=progress, store_root=store_root,
                                     features=features)
        result.aggregates.update({name: None for name in sorted(without_holdout)})
        return result
    return evaluate_tofu(model, formatter, task, reference=reference, metrics=metrics, progress=progress,
                         store_root=store_root, features=features, **settings)


def evaluate_task_cached(model_dir: Path, task: Task | CorpusTask, formatter: QAFormatter, settings: dict,
                         trust_remote_code: bool = False, progress: bool = True,
                         features: FeatureSpec | None = None) -> EvalResult:
    """The saved model's suite result without reference, computed once and then read from ``<cache>/evals``
    (:mod:`unlearnkit.evaluation.cache`); ``features`` as in :func:`evaluate_task`."""
    cache = default_cache_dir()
    path = cache / "evals" / f"{eval_key(model_dir, task, formatter, settings, features)}.json"
    result = read_cached(path, features)
    if result is None:
        model, _ = load_causal_lm(model_dir, trust_remote_code=trust_remote_code)
        result = evaluate_task(model, formatter, task, None, settings, progress=progress,
                               store_root=cache / "scores", features=features)
        write_cached(path, result, features)
    return result
