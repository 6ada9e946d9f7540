"""One evaluator for every caller: a task's suite, the result store, the retain model's reference and the intervals.

:class:`Evaluator` (task + formatter + :class:`~unlearnkit.config.EvalConfig`) picks the suite — TOFU's for QA tasks,
MUSE's for raw-text (corpus) tasks — and is what the pipeline, ``unlearnkit eval``, the attacks, the training
monitor and :func:`unlearnkit.evaluate` call:

- :meth:`Evaluator.evaluate` scores a model in memory (scores and generations kept in the result store, so an
  interrupted evaluation resumes), compares it with the retain model's statistics and draws the bootstrap
  intervals;
- :meth:`Evaluator.evaluate_saved` evaluates a model folder once: its result (without reference, which
  :func:`~unlearnkit.evaluation.suites.result.with_reference` adds without a model) is kept beside the model's
  scores, ``<cache>/scores/<model fingerprint>/result-<settings>.json`` (pooled features in a ``.npz`` beside it), so
  a second run with the same target and retain models only evaluates the unlearned one.

One cache, one fingerprint: everything a model's evaluation keeps lives under its weights' fingerprint
(:func:`~unlearnkit.evaluation.scoring.store.model_fingerprint`), so a changed weight or template never reads a
stale result, and the same weights in another folder read the same one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import numpy as np

from unlearnkit.config import EvalConfig
from unlearnkit.data.corpus import CorpusTask
from unlearnkit.data.formatting import JAILBREAK_ANSWER_START, QAFormatter
from unlearnkit.data.types import Task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import registry
from unlearnkit.evaluation.metrics.intervals import aggregate_intervals
from unlearnkit.evaluation.scoring.distributed import world
from unlearnkit.evaluation.scoring.pooling import FeatureSpec
from unlearnkit.evaluation.scoring.store import model_fingerprint, settings_key
from unlearnkit.evaluation.suites.muse import TEXT_SCORES_VERSION, evaluate_muse_suite
from unlearnkit.evaluation.suites.result import EvalResult, with_reference
from unlearnkit.evaluation.suites.tofu import SCORES_VERSION, evaluate_tofu
from unlearnkit.runio import default_cache_dir, write_json

RESULT_VERSION = 7  # bump when a cached whole result would differ (CHANGELOG.md)


def is_corpus(task: Task | CorpusTask) -> bool:
    return isinstance(task, CorpusTask)


def suite_of(task: Task | CorpusTask) -> str:
    return "muse" if is_corpus(task) else "tofu"


def suite_metrics(task: Task | CorpusTask) -> tuple[str, ...]:
    """Every metric name the task's suite computes."""
    return registry.names(suite_of(task))


class Evaluator:
    """Evaluates models on ``task`` with ``config``: the suite, the store, the reference and the intervals.

    ``metrics``: the metric names to compute (with what they depend on; default: every metric of the suite but
    the opt-in ones, plus the config's ``extra_metrics``). ``features``: pooled representation features from the same scoring pass. ``cache_dir``:
    the result store's root (default :func:`~unlearnkit.runio.default_cache_dir`); ``store=False`` keeps nothing.
    """

    def __init__(self, task: Task | CorpusTask, formatter: QAFormatter, config: EvalConfig | None = None, *,
                 metrics: Iterable[str] | None = None, features: FeatureSpec | None = None,
                 cache_dir: Path | None = None, store: bool = True, progress: bool = True):
        self.config = config or EvalConfig()
        self.task, self.suite = task, suite_of(task)
        self.formatter = formatter.with_tokenization(self.config.tokenization)
        if self.config.jailbreak:
            if self.suite != "tofu":
                raise UnlearnkitError("eval.jailbreak puts OpenUnlearning's jailbreak start in front of QA answers, "
                                      "and this task is raw text: set eval.jailbreak: false for it")
            self.formatter = self.formatter.with_answer_start(JAILBREAK_ANSWER_START)
        if metrics is None and self.config.extra_metrics:  # the default set plus the opt-in ones asked for
            metrics = [*registry.names(self.suite, include_opt_in=False), *self.config.extra_metrics]
        self.metrics = registry.resolve(self.suite, metrics)  # unknown names fail here, before any model runs
        self.features = features
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.store = store
        self.progress = progress

    @property
    def metric_names(self) -> tuple[str, ...]:
        return registry.names(self.suite)

    def evaluate(self, model, reference: dict | None = None, *, metrics: Iterable[str] | None = None,
                 intervals: bool | None = None, store: bool | None = None,
                 progress: bool | None = None) -> EvalResult:
        """Evaluate ``model`` (``metrics`` overrides the evaluator's choice for this call)."""
        wanted = self.metrics if metrics is None else registry.resolve(self.suite, metrics)
        result = self._run_suite(model, reference, wanted, self.store if store is None else store,
                                 self.progress if progress is None else progress)
        return self.with_intervals(result, reference) if self._intervals(intervals) else result

    def evaluate_saved(self, model_dir: Path, reference: dict | None = None, *, trust_remote_code: bool = False,
                       intervals: bool | None = None) -> EvalResult:
        """The saved model's result, computed once per (weights, task, settings) and then read from the cache."""
        from unlearnkit.models.load import load_causal_lm

        model, _ = load_causal_lm(model_dir, trust_remote_code=trust_remote_code)
        path = self._result_path(model)
        result = _read(path, self.features)
        if result is None:
            result = self._run_suite(model, None, self.metrics, True, self.progress)
            _write(path, result, self.features)
        result = with_reference(result, reference)
        return self.with_intervals(result, reference) if self._intervals(intervals) else result

    def with_intervals(self, result: EvalResult, reference: dict | None) -> EvalResult:
        """``result`` with a bootstrap confidence interval for every aggregate (seeded: reproducible)."""
        result.intervals = aggregate_intervals(result.aggregates, result.per_example, reference,
                                               n_resamples=self.config.n_resamples,
                                               confidence=self.config.confidence)
        return result

    def _intervals(self, asked: bool | None) -> bool:
        return self.config.intervals if asked is None else asked

    def _run_suite(self, model, reference: dict | None, wanted: set[str], store: bool, progress: bool) -> EvalResult:
        store_root = self.cache_dir / "scores" if store else None
        if self.suite == "muse":
            without_holdout = set()
            if not self.task.holdout:  # as the TOFU suite does: no membership metrics without holdout texts
                without_holdout = {name for name in wanted if registry.metric(name, "muse").interval in
                                   ("auc", "privleak")}
            result = evaluate_muse_suite(model, self.formatter, self.task, reference=reference,
                                         metrics=wanted - without_holdout, batch_size=self.config.batch_size,
                                         progress=progress, store_root=store_root, features=self.features)
            result.aggregates.update({name: None for name in sorted(without_holdout)})
            return result
        return evaluate_tofu(model, self.formatter, self.task, reference=reference, metrics=wanted,
                             batch_size=self.config.batch_size, max_new_tokens=self.config.max_new_tokens,
                             progress=progress, store_root=store_root, features=self.features)

    def _result_path(self, model) -> Path:
        """Where the whole result of ``model`` on this task with these settings is kept (rank-independent)."""
        return self.model_folder(model) / f"{settings_key('result', self.settings())}.json"

    def model_folder(self, model) -> Path:
        """The store's folder of ``model`` (its weights' and formatting's fingerprint): what is kept of it lives here."""
        return self.cache_dir / "scores" / model_fingerprint(model, self.formatter)

    def settings(self) -> dict:
        """Everything besides the model that decides this evaluator's results: the task's evaluation splits, the
        metrics, the suite's settings and the versions of what is stored (a key for anything cached per result)."""
        if is_corpus(self.task):
            data = {"task": asdict(self.task)}
        else:
            data = {"splits": {name: [asdict(e) for e in getattr(self.task, name)]
                               for name in ("eval_forget", "eval_retain", "real_authors", "world_facts", "holdout")}}
        scores_version = TEXT_SCORES_VERSION if self.suite == "muse" else SCORES_VERSION  # a new one: recomputed
        settings = {"version": RESULT_VERSION, "scores_version": scores_version, "suite": self.suite,
                    "metrics": sorted(self.metrics), "batch_size": self.config.batch_size,
                    "max_new_tokens": self.config.max_new_tokens, **data,
                    **({"features": self.features.settings()} if self.features is not None else {})}
        return settings


def _read(path: Path, features: FeatureSpec | None) -> EvalResult | None:
    """The result kept at ``path`` (with its features when asked for), or None when it is not all there."""
    arrays = path.with_suffix(".features.npz")
    if not path.exists() or (features is not None and not arrays.exists()):
        return None
    result = EvalResult(**json.loads(path.read_text()))
    if features is not None:
        with np.load(arrays) as stored:
            result.features = {split: stored[split] for split in stored.files}
    return result


def _write(path: Path, result: EvalResult, features: FeatureSpec | None) -> None:
    """Keep ``result`` at ``path`` (features beside it); in a process group the main process writes."""
    if world()[0] != 0:
        return
    if features is not None:  # the arrays first: a JSON without its arrays is never read as complete
        arrays = path.with_suffix(".features.npz")
        arrays.parent.mkdir(parents=True, exist_ok=True)
        partial = arrays.with_name(f".{arrays.name}.{os.getpid()}.partial.npz")
        np.savez(partial, **result.features)
        partial.replace(arrays)
    write_json(path, result.to_dict())
