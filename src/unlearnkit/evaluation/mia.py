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

import math
import zlib
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from unlearnkit.data.formatting import IGNORE_INDEX, Encoded, QAFormatter
from unlearnkit.errors import UnlearnkitError

MIN_K_FRACTION = 0.4  # OpenUnlearning's mia_min_k.yaml for TOFU (the class default is 0.2)
PRIVLEAK_EPS = 1e-10
MIN_K_PLUS_PLUS_MIN_VARIANCE = 1e-6  # the reference clamps σ_t² at this value before the square root
GRADNORM_P = 2  # OpenUnlearning's gradnorm p (1, 2 or inf are allowed there)

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


def next_token_moments(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of log p under the model's own next-token distribution, per position.

    For one position with p = softmax(logits) over the vocabulary: μ = Σ_v p_v log p_v and
    σ = sqrt(Σ_v p_v (log p_v − μ)²), which equals the reference's Σ_v p_v (log p_v)² − μ² (Min-K%++,
    arXiv:2404.02936; OpenUnlearning ``mia/min_k_plus_plus.py``) but is computed in the centred form, which
    does not lose precision to cancellation. Tokens with p_v = 0 (logits of −inf) contribute 0, not NaN.
    ``logits``: shape (..., V); returns (μ, σ) of shape (...) in float32, or float64 for float64 logits. σ is not
    clamped here; :func:`min_k_plus_plus_score` applies the reference's clamp.
    """
    logits = torch.as_tensor(logits)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    present = p > 0
    mu = torch.where(present, p * logp, torch.zeros_like(p)).sum(-1)
    centred = torch.where(present, logp - mu.unsqueeze(-1), torch.zeros_like(p))
    variance = (p * centred.square()).sum(-1)
    return mu, variance.clamp(min=0).sqrt()


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


# --- gradnorm (runs the model) -----------------------------------------------------------------------------

Reduction = Literal["mean", "global"]


def encode_item(formatter: QAFormatter, item) -> Encoded:
    """A (question, answer) pair → ``formatter.encode``; a raw text → its tokens, every token after the first scored.

    Raw text is tokenized with the tokenizer's own special tokens (a BOS when it adds one), truncated to
    ``formatter.max_length``, and no EOS is appended; each token is predicted from the ones before it.
    """
    if isinstance(item, Encoded):
        return item
    if isinstance(item, str):
        return formatter.encode_text(item)
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(s, str) for s in item):
        return formatter.encode(item[0], item[1])
    raise UnlearnkitError(
        f"cannot score {type(item).__name__} {item!r:.60}: pass (question, answer) pairs, raw text strings or Encoded"
    )


def gradient_norms(
    model,
    formatter: QAFormatter,
    items: Sequence,
    p: float = GRADNORM_P,
    reduction: Reduction = "mean",
    drop_eos: bool = True,
) -> list[float]:
    """gradnorm statistic per example: the size of ∇θ ℓ̄(x), the gradient of the example's mean NLL, batch size 1.

    ``items``: (question, answer) pairs (the answer tokens are scored), raw text strings (every token after the
    first is scored) or :class:`~unlearnkit.data.formatting.Encoded` examples. ℓ̄ is the mean NLL of the scored
    tokens without the final EOS prediction when ``drop_eos`` (the reference's ``tokenwise_logprobs``).

    ``reduction="mean"`` (default) follows OpenUnlearning ``mia/gradnorm.py``: the mean over parameter tensors of
    each tensor's gradient p-norm, (1/|Θ|) Σ_θ ‖∂ℓ̄/∂θ‖_p, over every trainable tensor that receives a gradient.
    ``reduction="global"`` is the p-norm of the whole gradient vector, ‖∇θ ℓ̄‖_p (metrics.md §2's formula), which
    weighs large tensors more. ``p`` is 1, 2 or ``math.inf``. Lower = more member-like (members sit near a
    minimum of the training loss).

    Gradients come from ``torch.autograd.grad``: the model's ``.grad`` buffers are never touched (the reference
    zeroes them). The model runs in eval mode (no dropout) with gradients enabled; its train/eval mode is restored.
    """
    if p not in (1, 2, math.inf):
        raise UnlearnkitError(f"gradnorm p must be 1, 2 or inf, got {p}")
    if reduction not in ("mean", "global"):
        raise UnlearnkitError(f"gradnorm reduction must be 'mean' or 'global', got {reduction!r}")
    params = [param for param in model.parameters() if param.requires_grad]
    if not params:
        raise UnlearnkitError("the model has no trainable parameters: gradnorm needs requires_grad=True weights")
    device = next(model.parameters()).device
    norms: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for item in items:
                loss = _example_loss(model, formatter, encode_item(formatter, item), drop_eos, device)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                per_tensor = torch.stack([g.detach().float().norm(p=p) for g in grads if g is not None])
                total = per_tensor.mean() if reduction == "mean" else torch.linalg.vector_norm(per_tensor, ord=p)
                norms.append(float(total))
    finally:
        model.train(was_training)
    return norms


def _example_loss(model, formatter: QAFormatter, enc: Encoded, drop_eos: bool, device) -> torch.Tensor:
    """ℓ̄ of one un-padded example: mean NLL of its labelled tokens (last one dropped if it is the EOS)."""
    start, end = enc.prompt_length, len(enc.input_ids)
    if drop_eos and enc.input_ids[-1] == formatter.eos_token_id and enc.labels[-1] != IGNORE_INDEX:
        end -= 1
    if end <= start:
        raise UnlearnkitError("an example has no scored tokens before its EOS: drop empty answers")
    ids = torch.tensor([enc.input_ids], device=device)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
    logp = torch.log_softmax(logits[start - 1 : end - 1].float(), dim=-1)
    targets = ids[0, start:end]
    return -logp.gather(-1, targets[:, None]).mean()


# --- AUC report --------------------------------------------------------------------------------------------


def mia_report(
    forget_stats: Mapping[str, Sequence[float]], holdout_stats: Mapping[str, Sequence[float]]
) -> dict[str, float]:
    """ROC AUC of every statistic, forget (label 0) vs holdout (label 1), as :func:`mia_auc`.

    Both mappings are statistic name → per-example values and must name the same statistics; no side may be
    empty or hold NaN. 1.0 = the forget set looks entirely like training data, 0.5 = indistinguishable.
    """
    if set(forget_stats) != set(holdout_stats):
        raise UnlearnkitError(
            f"forget statistics {sorted(forget_stats)} and holdout statistics {sorted(holdout_stats)} differ: "
            "compute the same statistics on both splits"
        )
    report: dict[str, float] = {}
    for name in forget_stats:
        forget, holdout = forget_stats[name], holdout_stats[name]
        if len(forget) == 0 or len(holdout) == 0:
            raise UnlearnkitError(f"statistic {name!r} has no forget or no holdout values: both splits need examples")
        values = np.asarray(list(forget) + list(holdout), dtype=np.float64)
        if np.isnan(values).any():
            raise UnlearnkitError(f"statistic {name!r} has NaN values: check the examples' token scores")
        report[name] = mia_auc(forget, holdout)
    return report


def privleak_report(report: Mapping[str, float], reference_report: Mapping[str, float]) -> dict[str, float]:
    """:func:`privleak` of every statistic present in both :func:`mia_report` outputs (model vs retain model)."""
    return {name: privleak(report[name], reference_report[name]) for name in report if name in reference_report}
