"""Membership-inference (MIA) statistics, their AUC (forget vs holdout) and privleak.

Every statistic is a per-example, "loss-like" number: lower = looks more like a training member. Their sources:

- loss: "Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting", Yeom et al. 2018,
  arXiv:1709.01604;
- zlib and reference: "Extracting Training Data from Large Language Models", Carlini et al. 2021,
  arXiv:2012.07805 (zlib entropy and reference-model calibration of the perplexity);
- Min-K% Prob: "Detecting Pretraining Data from Large Language Models", Shi et al. 2023, arXiv:2310.16789;
- Min-K%++: "Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large Language Models", Zhang et al.
  2024, arXiv:2404.02936;
- gradnorm: the gradient-norm attack as OpenUnlearning's ``gradnorm.py`` implements it (it cites arXiv:2402.17012
  for its use on LLMs);
- privleak: "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", Shi et al. 2024, arXiv:2407.06460.

The functions follow OpenUnlearning (locuslab/open-unlearning) ``src/evals/metrics/mia/`` — ``loss.py``,
``zlib.py``, ``min_k.py``, ``min_k_plus_plus.py``, ``reference.py``, ``gradnorm.py`` —, ``mia/utils.py``
(``mia_auc``), ``src/evals/metrics/privacy.py`` (``privleak``) and ``configs/eval/tofu_metrics/mia_*.yaml``
(k = 0.4, TOFU forget split vs holdout split, labels on the answer tokens).

Which tokens each statistic reads, as the reference does (pass token log-probs of the answer for QA data, or of
every predicted token of a chunk for raw text; the caller decides):

- loss, zlib and reference use the mean NLL over *all* scored tokens, the final EOS included (the reference's
  ``evaluate_probability``; ``PairScore.token_logprobs`` / ``PairScore.mean_nll``);
- Min-K%, Min-K%++ and gradnorm drop the final EOS prediction (the reference's ``tokenwise_logprobs`` and
  ``tokenwise_vocab_logprobs`` drop the last label; ``PairScore.logprobs_before_eos``).
  :func:`example_statistics` applies both rules from one array.

Orientation, as in the reference: the AUC labels forget examples 0 and holdout examples 1 and uses the loss-like
statistic as the score, so AUC → 1 when the model still separates its forget set from unseen data (forget looks
like training data) and 0.5 when it cannot. privleak compares AUC' = 1 − AUC of the model with that of the
retain model, which is MUSE's convention (:func:`privleak`): ≈ 0 is ideal, strongly negative means
under-unlearning (the forget set still looks like training data), strongly positive means over-unlearning.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from unlearnkit.errors import UnlearnkitError

MIN_K_FRACTION = 0.4  # OpenUnlearning's mia_min_k.yaml for TOFU (the class default is 0.2)
PRIVLEAK_EPS = 1e-10
MIN_K_PLUS_PLUS_MIN_VARIANCE = 1e-6  # the reference clamps σ_t² at this value before the square root

STATISTICS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference", "gradnorm")


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


# --- per-example statistics --------------------------------------------------------------------------------


def _logprob_array(token_logprobs: Sequence[float], what: str) -> np.ndarray:
    values = np.asarray(token_logprobs, dtype=np.float64)
    if values.ndim != 1:
        raise UnlearnkitError(f"{what} must be a flat list of token log-probs, got shape {values.shape}")
    if values.size == 0:
        raise UnlearnkitError(f"{what} is empty: the example has no scored tokens; drop empty answers or texts")
    return values


def loss_score(token_logprobs: Sequence[float]) -> float:
    """LOSS statistic: the mean NLL ℓ̄ = −(1/T) Σ_t log p(x_t | x_<t) over the scored tokens.

    OpenUnlearning ``mia/loss.py`` (``evaluate_probability``'s ``avg_loss``, EOS included). Lower = more
    member-like. An empty array raises :class:`UnlearnkitError` (the mean of nothing is undefined).
    """
    return float(-np.mean(_logprob_array(token_logprobs, "token_logprobs")))


def zlib_entropy(text: str) -> int:
    """Length in bytes of ``zlib.compress(text.encode("utf-8"))`` (default level), the zlib "entropy" of a text."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_score(token_logprobs: Sequence[float], text: str) -> float:
    """zlib statistic: ℓ̄ / len(zlib.compress(text as UTF-8 bytes)).

    OpenUnlearning ``mia/zlib.py``: ``loss / len(zlib.compress(text.encode("utf-8")))`` with ``text`` the decoded
    target tokens (``skip_special_tokens=True``), i.e. the answer (QA) or the chunk (raw text) as a string. The
    compressed length is never 0 (zlib writes a header), so no guard is needed. Lower = more member-like.
    """
    return loss_score(token_logprobs) / zlib_entropy(text)


def reference_score(token_logprobs: Sequence[float], reference_token_logprobs: Sequence[float]) -> float:
    """Reference statistic: ℓ̄_model − ℓ̄_ref, the model's mean NLL minus a reference model's on the same tokens.

    OpenUnlearning ``mia/reference.py`` (``target_loss − ref_loss``, both ``avg_loss`` over the same batch). The
    reference model is the retain model or the base model; both log-prob arrays should come from the same
    tokenization (the lengths are not checked, so a reference model with another tokenizer is the caller's
    choice). Lower = more member-like.
    """
    return loss_score(token_logprobs) - loss_score(reference_token_logprobs)


def min_k_plus_plus_score(
    token_logprobs: Sequence[float], mu: Sequence[float], sigma: Sequence[float], k: float = MIN_K_FRACTION
) -> float:
    """Min-K%++: −(mean of the lowest max(1, ⌊k·T⌋) values of z_t = (log p(x_t) − μ_t) / σ_t); 0.0 when T = 0.

    μ_t, σ_t from :func:`next_token_moments` at the same positions as ``token_logprobs``. Follows OpenUnlearning
    ``mia/min_k_plus_plus.py``: σ_t = sqrt(max(σ_t², 1e-6)) (its clamp of the variance), count = ⌊k·T⌋ by
    ``int()`` truncation with a minimum of one token, and 0 for an example without tokens. The reference scores the
    answer tokens without the final EOS prediction: pass ``PairScore.logprobs_before_eos`` and the moments of those
    positions. Lower = more member-like.
    """
    values = np.asarray(token_logprobs, dtype=np.float64)
    mu_arr, sigma_arr = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    if not values.shape == mu_arr.shape == sigma_arr.shape or values.ndim != 1:
        raise UnlearnkitError(
            f"token_logprobs, mu and sigma must be flat arrays of one length, got shapes {values.shape}, "
            f"{mu_arr.shape} and {sigma_arr.shape}: pass the moments of the scored positions only"
        )
    if values.size == 0:
        return 0.0
    z = (values - mu_arr) / np.sqrt(np.maximum(np.square(sigma_arr), MIN_K_PLUS_PLUS_MIN_VARIANCE))
    count = max(1, int(values.size * k))
    return float(-np.mean(np.sort(z)[:count]))


def example_statistics(
    token_logprobs: Sequence[float],
    ends_with_eos: bool,
    text: str | None = None,
    mu: Sequence[float] | None = None,
    sigma: Sequence[float] | None = None,
    reference_token_logprobs: Sequence[float] | None = None,
    k: float = MIN_K_FRACTION,
) -> dict[str, float]:
    """Every statistic one example's token scores allow, with the reference's choice of tokens for each.

    ``token_logprobs``: every scored token, the final EOS included when ``ends_with_eos`` (as
    ``PairScore.token_logprobs`` / ``PairScore.ends_with_eos``). ``mu``/``sigma``: :func:`next_token_moments` at the
    same positions (all of them; the last is dropped with the EOS). ``reference_token_logprobs``: the reference
    model's scores of the same tokens (EOS included likewise). Returns ``loss`` and ``min_k`` always, ``zlib`` when
    ``text`` is given, ``min_k_plus_plus`` with the moments, ``reference`` with the reference scores; gradnorm needs
    the model (see :func:`gradient_norms`).
    """
    before_eos = list(token_logprobs)[:-1] if ends_with_eos else list(token_logprobs)
    out = {"loss": loss_score(token_logprobs), "min_k": min_k_percent_score(before_eos, k)}
    if text is not None:
        out["zlib"] = zlib_score(token_logprobs, text)
    if (mu is None) != (sigma is None):
        raise UnlearnkitError("pass both mu and sigma (from next_token_moments) or neither")
    if mu is not None and sigma is not None:
        if len(mu) != len(token_logprobs) or len(sigma) != len(token_logprobs):
            raise UnlearnkitError(
                f"mu and sigma have {len(mu)} and {len(sigma)} positions but token_logprobs has "
                f"{len(token_logprobs)}: pass the moments of every scored position"
            )
        keep = len(before_eos)
        out["min_k_plus_plus"] = min_k_plus_plus_score(before_eos, list(mu)[:keep], list(sigma)[:keep], k)
    if reference_token_logprobs is not None:
        out["reference"] = reference_score(token_logprobs, reference_token_logprobs)
    return out


def statistic_of(statistic: str, scored: Sequence[tuple]) -> list[float]:
    """One membership statistic of each ``(score, text)``: the ``statistic`` entry of :func:`example_statistics`
    on a scoring-pass result (``PairScore``: token log-probs, EOS flag, Min-K%++ moments) and the scored text."""
    return [example_statistics(score.token_logprobs, score.ends_with_eos, text=text, mu=score.token_mu,
                               sigma=score.token_sigma)[statistic] for score, text in scored]
