"""What an evaluation returns: aggregates, per-example values, generations, intervals and pooled features."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unlearnkit.errors import UnlearnkitError


@dataclass
class EvalResult:
    """What :func:`evaluate_tofu` measured.

    ``aggregates``: metric name → value (``None`` when skipped: empty split, no reference, no holdout).
    ``per_example``: metric name → one value per example of its split, in split order (truth ratios are the raw
    R; ``mia_min_k_forget`` / ``mia_min_k_holdout`` are the Min-K% scores). ``generations``: split prefix → the
    greedy answers ROUGE was computed on. ``features``: representation split (:data:`FEATURE_SPLITS`) → ``[N,
    hidden]`` float32 pooled hidden states, when requested (not part of :meth:`to_dict`; large and not JSON).
    """

    aggregates: dict[str, float | None]
    per_example: dict[str, list] = field(default_factory=dict)
    generations: dict[str, list[str]] = field(default_factory=dict)
    intervals: dict[str, list | None] = field(default_factory=dict)  # bootstrap CIs (evaluation/intervals.py)
    features: dict[str, np.ndarray] = field(default_factory=dict)

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
        return {"aggregates": self.aggregates, "intervals": self.intervals, "per_example": self.per_example,
                "generations": self.generations}
