"""What an evaluation returns (:class:`EvalResult`), and the metrics computed from the table into one.

:func:`compute_metrics` runs the wanted metrics' ``compute`` (:mod:`unlearnkit.evaluation.metrics.registry`) in
dependency order on a suite's scores; :func:`with_reference` recomputes, without any model, the metrics that
compare with the retain model, for a result evaluated (or cached) without its statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import registry
from unlearnkit.evaluation.metrics.registry import Inputs

REFERENCE_KEYS = ("forget_truth_ratios", "mia_min_k_auc", "mia_loss_forget", "mia_loss_holdout")


@dataclass
class EvalResult:
    """What a suite measured (``suite``: ``"tofu"`` or ``"muse"``, whose metric table names the aggregates).

    ``aggregates``: metric name → value (``None`` when skipped: empty split, no reference, no holdout).
    ``per_example``: metric name → one value per example of its split, in split order (truth ratios are the raw
    R; ``mia_min_k_forget`` / ``mia_min_k_holdout`` are the Min-K% scores). ``generations``: split prefix → the
    greedy answers ROUGE was computed on. ``features``: representation split (forget, retain, holdout) → ``[N,
    hidden]`` float32 pooled hidden states, when requested (not part of :meth:`to_dict`; large and not JSON).
    """

    aggregates: dict[str, float | None]
    per_example: dict[str, list] = field(default_factory=dict)
    generations: dict[str, list[str]] = field(default_factory=dict)
    intervals: dict[str, list | None] = field(default_factory=dict)  # bootstrap CIs (metrics/intervals.py)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    suite: str = "tofu"

    def reference_stats(self, required: bool = True) -> dict:
        """The ``reference`` to pass to :func:`evaluate_tofu` when this model is the retain model.

        ``forget_truth_ratios`` (for forget_quality) and ``mia_min_k_auc`` (for privleak), each present only if
        it was computed. With neither, raises unless ``required`` is False (then ``{}``: nothing to compare with,
        e.g. a raw-text task without holdout texts).
        """
        stats: dict = {}
        ratios = [r for r in self.per_example.get("forget_Truth_Ratio", []) if r is not None]
        if ratios:
            stats["forget_truth_ratios"] = ratios
        if self.aggregates.get("mia_min_k") is not None:
            stats["mia_min_k_auc"] = self.aggregates["mia_min_k"]
        for key in ("mia_loss_forget", "mia_loss_holdout"):  # for the reference-model MIA statistic
            if key in self.per_example:
                stats[key] = self.per_example[key]
        if not stats and required:
            raise UnlearnkitError(
                "this result has neither forget truth ratios nor a Min-K% AUC: evaluate the retain model with "
                "forget_Truth_Ratio and mia_min_k on a task with eval_forget (and holdout) examples"
            )
        return stats

    def to_dict(self) -> dict:
        return {"suite": self.suite, "aggregates": self.aggregates, "intervals": self.intervals,
                "per_example": self.per_example, "generations": self.generations}


def check_reference(reference: dict | None) -> dict:
    """``reference`` as a dict (``{}`` for None), its keys checked."""
    if reference is None:
        return {}
    if not isinstance(reference, dict):
        raise UnlearnkitError("reference must be a dict: pass EvalResult.reference_stats() of the retain model")
    unknown = sorted(set(reference) - set(REFERENCE_KEYS))
    if unknown:
        raise UnlearnkitError(
            f"reference has unknown keys {unknown}: pass EvalResult.reference_stats() of the retain model "
            f"(keys {', '.join(REFERENCE_KEYS)})"
        )
    return reference


def compute_metrics(suite: str, wanted: set[str], inputs: Inputs) -> EvalResult:
    """The wanted metrics of ``suite``, each computed after those it depends on; ``inputs`` gathers the values."""
    generations: dict[str, list[str]] = {}
    for metric in registry.in_order(suite, wanted):
        computed = metric.compute(inputs)
        inputs.aggregates[metric.name] = computed.aggregate
        inputs.per_example.update(computed.per_example)
        generations.update(computed.generations)
    order = registry.names(suite)
    aggregates = {name: inputs.aggregates[name] for name in order if name in wanted}
    return EvalResult(aggregates, dict(inputs.per_example), generations, suite=suite)


def with_reference(result: EvalResult, reference: dict | None) -> EvalResult:
    """``result`` with the metrics that compare with the retain model recomputed against ``reference``.

    For results computed (or cached) without the retain model's statistics: no model runs, the comparisons are
    pure functions of the stored per-example values and aggregates. Only the metrics ``result`` has keys for are
    filled in; ``reference=None`` sets them to ``None``.
    """
    ref = check_reference(reference)
    inputs = Inputs(aggregates=dict(result.aggregates), per_example=dict(result.per_example), reference=ref)
    for metric in registry.in_order(result.suite, set(result.aggregates)):
        if metric.reference:
            computed = metric.compute(inputs)
            inputs.aggregates[metric.name] = computed.aggregate
            inputs.per_example.update(computed.per_example)
    return EvalResult(inputs.aggregates, inputs.per_example, dict(result.generations), features=result.features,
                      suite=result.suite)
