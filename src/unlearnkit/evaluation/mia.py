"""Membership inference on QA answers: the Min-K% score, its AUC (forget vs holdout) and privleak.

- Min-K% Prob: "Detecting Pretraining Data from Large Language Models", Shi et al. 2023, arXiv:2310.16789.
- privleak: "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", Shi et al. 2024, arXiv:2407.06460.

Follows OpenUnlearning (locuslab/open-unlearning): ``src/evals/metrics/mia/min_k.py`` (``MinKProbAttack``),
``src/evals/metrics/mia/utils.py`` (``mia_auc``), ``src/evals/metrics/privacy.py`` (``privleak``) and
``configs/eval/tofu_metrics/mia_min_k.yaml`` (k = 0.4, TOFU forget split vs holdout split, question + answer).

Orientation, as in the reference: the score is "loss-like" (lower = looks more like a training member), and the
AUC labels forget examples 0 and holdout examples 1, so AUC → 1 when the model still separates its forget set
from unseen data and 0.5 when it cannot. privleak compares 1 − AUC of the model with 1 − AUC of the retain model,
which is MUSE's convention: ≈ 0 is ideal, strongly negative means under-unlearning (the forget set still looks
like training data), strongly positive means over-unlearning.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

MIN_K_FRACTION = 0.4  # OpenUnlearning's mia_min_k.yaml for TOFU (the class default is 0.2)
PRIVLEAK_EPS = 1e-10


def min_k_percent_score(token_logprobs: Sequence[float], k: float = MIN_K_FRACTION) -> float:
    """Min-K% score: −(mean of the lowest max(1, ⌊k·T⌋) token log-probs); 0.0 for an empty answer.

    The reference scores the answer tokens without the final EOS prediction (``tokenwise_logprobs`` drops it):
    pass ``PairScore.logprobs_before_eos``. Lower = more member-like.
    """
    if len(token_logprobs) == 0:
        return 0.0
    count = max(1, int(len(token_logprobs) * k))
    lowest = np.sort(np.asarray(token_logprobs, dtype=np.float64))[:count]
    return float(-np.mean(lowest))


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float | None:
    """ROC AUC (``sklearn.metrics.roc_auc_score``) with forget = 0 and holdout = 1 on loss-like scores.

    1.0 when every forget example scores lower (more member-like) than every holdout example; 0.5 when the two
    cannot be told apart. ``None`` when either side is empty.
    """
    if len(forget_scores) == 0 or len(holdout_scores) == 0:
        return None
    labels = np.array([0] * len(forget_scores) + [1] * len(holdout_scores))
    scores = np.asarray(list(forget_scores) + list(holdout_scores), dtype=np.float64)
    return float(roc_auc_score(labels, scores))


def privleak(auc: float, reference_auc: float, eps: float = PRIVLEAK_EPS) -> float:
    """privleak = ((1 − AUC) − (1 − AUC_ref)) / ((1 − AUC_ref) + eps) × 100.

    ``auc`` and ``reference_auc`` are :func:`mia_auc` values (OpenUnlearning's orientation) of the evaluated model
    and of the retain model; the reference ``privleak`` turns both into AUC' = 1 − AUC to match MUSE's reported
    numbers, so this is MUSE's (AUC' − AUC'_retrain) / AUC'_retrain × 100 with AUC' the chance that a forget
    example looks *less* member-like than a holdout example. A model that still memorises its forget set has
    AUC ≈ 1, AUC' ≈ 0 and privleak ≈ −100 against a retain model at AUC ≈ 0.5; the retain model against itself
    gives 0.
    """
    score, ref = 1 - auc, 1 - reference_auc
    return (score - ref) / (ref + eps) * 100
