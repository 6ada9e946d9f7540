"""One ensemble scored against the retrained reference: the numbers of one row of a classifier run's tables.

Every value is a pure function of the members' logits on the forget, retain and test sets (and the reference's), so
the run directory's ``logits/<row>.safetensors`` recompute it (``tests/classifier/test_classifier_run.py`` does):

- per member, UA, RA, TA and MIA-Efficacy (``evaluation/metrics/classifier.py``: OPTML's definitions, in %); the
  row's value is their mean over the N members, the interval a percentile bootstrap over members;
- Avg. Gap: the mean over the four of |mean over the method's members − mean over the reference's members|; its
  interval resamples both sides' members independently [choice: the gap of the means, the quantity the OPTML
  tables estimate by averaging runs, rather than a mean of per-member gaps, which never reaches 0];
- the NeurIPS 2023 competition's ε score (``eps_score.py``): each forget example's ε from the N logit-scaled
  confidences of each side, its bucket points, their mean F (interval: bootstrap over forget examples) and the final
  score F × RA/RA_ref × TA/TA_ref (no interval: it mixes examples and members);
- KLOM (``klom.py``, the DMM paper's metric) per point of the forget, retain and test sets, summarised by its mean
  over the points where it is defined (interval: bootstrap over those points; a point whose unlearned margins all
  equal the pooled maximum has no value, as in the reference, and is counted in ``klom_undefined``).
"""

from __future__ import annotations

import numpy as np

from unlearnkit.classifier.data import ClassifierTask
from unlearnkit.classifier.ensemble import Ensemble
from unlearnkit.evaluation.metrics.classifier import classifier_scores
from unlearnkit.evaluation.metrics.eps_score import (bucket_points, final_score, logit_scaled_confidence,
                                                     per_example_epsilon)
from unlearnkit.evaluation.metrics.klom import klom, margins
from unlearnkit.evaluation.metrics.statistics import bootstrap_ci, percentile_interval, resample_indices

SPLITS = ("forget", "retain", "test")
SCORES = ("unlearning_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy")


def split_data(task: ClassifierTask, forget: np.ndarray, retain: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
    """(x, y) of the forget, retain and test sets."""
    return {"forget": (task.train.x[forget], task.train.y[forget]),
            "retain": (task.train.x[retain], task.train.y[retain]), "test": (task.test.x, task.test.y)}


def ensemble_logits(ensemble: Ensemble, splits: dict) -> dict[str, np.ndarray]:
    """Every member's float32 logits on each split: (members, examples, classes)."""
    return {name: ensemble.logits(x).float().cpu().numpy() for name, (x, _) in splits.items()}


def member_scores(logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> np.ndarray:
    """(members, 4): each member's UA, RA, TA, MIA-Efficacy in %."""
    return np.array([classifier_scores(*[(logits[s][m], labels[s]) for s in SPLITS]).values()
                     for m in range(len(logits["forget"]))])


class Reference:
    """The retrained members' scores, confidences and margins, computed once and compared with every row."""

    def __init__(self, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]):
        self.logits, self.labels = logits, labels
        self.scores = member_scores(logits, labels)
        self.confidence = logit_scaled_confidence(logits["forget"], labels["forget"])
        self.margins = {s: margins(logits[s], labels[s]) for s in SPLITS}


def describe_reference(reference: Reference, resamples: int | None, confidence: float) -> dict:
    """The reference's own row: its per-member scores, their means and intervals."""
    aggregates = {name: float(reference.scores[:, k].mean()) for k, name in enumerate(SCORES)}
    intervals = ({name: list(bootstrap_ci(reference.scores[:, k], n_resamples=resamples, confidence=confidence))
                  for k, name in enumerate(SCORES)} if resamples else {})
    return {"aggregates": aggregates, "intervals": intervals,
            "per_member": {name: reference.scores[:, k].tolist() for k, name in enumerate(SCORES)}}


def score_row(logits: dict[str, np.ndarray], reference: Reference, resamples: int | None = 1000,
              confidence: float = 0.95) -> dict:
    """The row of one ensemble: aggregates, intervals (``resamples`` None: none), per-member and per-example values."""
    labels = reference.labels
    scores = member_scores(logits, labels)
    members = len(scores)
    epsilons = per_example_epsilon(logit_scaled_confidence(logits["forget"], labels["forget"]), reference.confidence)
    points = bucket_points(epsilons, members)
    quality = float(points.mean())
    kloms = {s: klom(margins(logits[s], labels[s]), reference.margins[s]) for s in SPLITS}
    aggregates = {name: float(scores[:, k].mean()) for k, name in enumerate(SCORES)}
    aggregates["avg_gap"] = _gap(scores[None], reference.scores[None])[0]
    aggregates["forget_quality"] = quality
    aggregates["final_score"] = float(final_score(quality, scores[:, 1], reference.scores[:, 1], scores[:, 2],
                                                  reference.scores[:, 2]))
    for s in SPLITS:
        defined = kloms[s][np.isfinite(kloms[s])]
        aggregates[f"klom_{s}"] = float(defined.mean()) if defined.size else None
    row = {"aggregates": aggregates, "intervals": {},
           "klom_undefined": {s: int((~np.isfinite(kloms[s])).sum()) for s in SPLITS},
           "per_member": {name: scores[:, k].tolist() for k, name in enumerate(SCORES)},
           "per_example": {"epsilon": epsilons.tolist(), "points": points.tolist(),
                           **{f"klom_{s}": [None if not np.isfinite(v) else float(v) for v in kloms[s]]
                              for s in SPLITS}}}
    if resamples:
        row["intervals"] = _intervals(scores, reference.scores, points, kloms, resamples, confidence)
    return row


def _gap(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Avg. Gap of the means, per leading index: scores (B, members, 4) and reference (B, members', 4) → (B,)."""
    return np.abs(scores.mean(axis=1) - reference.mean(axis=1)).mean(axis=-1)


def _intervals(scores: np.ndarray, reference: np.ndarray, points: np.ndarray, kloms: dict, resamples: int,
               confidence: float) -> dict:
    out = {name: list(bootstrap_ci(scores[:, k], n_resamples=resamples, confidence=confidence))
           for k, name in enumerate(SCORES)}
    own, other = resample_indices([len(scores), len(reference)], resamples, seed=0)
    out["avg_gap"] = list(percentile_interval(_gap(scores[own], reference[other]), confidence))
    out["forget_quality"] = list(bootstrap_ci(points, n_resamples=resamples, confidence=confidence))
    for s, values in kloms.items():
        defined = values[np.isfinite(values)]
        if defined.size:
            out[f"klom_{s}"] = list(bootstrap_ci(defined, n_resamples=resamples, confidence=confidence))
    return out
