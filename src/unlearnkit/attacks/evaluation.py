"""How the attacks evaluate: through the caller's :class:`~unlearnkit.evaluation.evaluator.Evaluator`.

The evaluator brings the task, the formatter, the scoring batch size and answer length
(:class:`~unlearnkit.config.EvalConfig`) and the default metric set; an attack may ask for other metrics per call.
An attacked model's evaluation is a measurement inside the attack, not a result of its own: it keeps nothing in the
result store (an attacked copy — a relearning step, a quantized reload — is thrown away) and draws no bootstrap
intervals; :meth:`Evaluator.with_intervals` adds them to a returned result when wanted.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

from unlearnkit.data.corpus import CorpusTask
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import Task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.evaluation.suites.result import EvalResult


def check_evaluator(evaluator: Evaluator, caller: str, qa: bool = False) -> Evaluator:
    """``evaluator`` itself; a clear error when it is not an :class:`Evaluator` (or, with ``qa``, not on a QA task)."""
    if not isinstance(evaluator, Evaluator):
        raise UnlearnkitError(f"{caller} takes an Evaluator (Evaluator(task, formatter, EvalConfig(...))), not "
                              f"{type(evaluator).__name__}: it carries the task, formatter and evaluation settings")
    if qa and isinstance(evaluator.task, CorpusTask):
        raise UnlearnkitError(f"{caller} reads QA questions and answers: give it an Evaluator on a QA task (tofu, "
                              f"synthetic, custom), not the raw-text task {evaluator.task.name!r}")
    return evaluator


def evaluate_attacked(evaluator: Evaluator, model: nn.Module, reference: dict | None = None,
                      metrics: Iterable[str] | None = None, progress: bool = False) -> EvalResult:
    """``evaluator.evaluate`` of an attacked model: ``metrics`` (default: the evaluator's), no store, no intervals."""
    return evaluator.evaluate(model, reference, metrics=metrics, intervals=False, store=False, progress=progress)


def retarget(evaluator: Evaluator, formatter: QAFormatter | None = None, task: Task | None = None) -> Evaluator:
    """A copy of ``evaluator`` that evaluates with another ``formatter`` and/or on another ``task`` (the same
    settings, metrics, features, cache and progress)."""
    return Evaluator(task if task is not None else evaluator.task,
                     formatter if formatter is not None else evaluator.formatter, evaluator.config,
                     metrics=evaluator.metrics, features=evaluator.features, cache_dir=evaluator.cache_dir,
                     store=evaluator.store, progress=evaluator.progress)
