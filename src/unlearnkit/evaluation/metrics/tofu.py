"""The TOFU metrics as pure functions of cached scores: each returns per-example values plus an aggregate.

Paper: "TOFU: A Task of Fictitious Unlearning for LLMs", Maini et al. 2024, arXiv:2401.06121. The reference
implementation, whose numbers these functions reproduce on the same scores, is OpenUnlearning
(locuslab/open-unlearning; "OpenUnlearning: Accelerating LLM Unlearning via Unified Benchmarking of Methods and
Metrics", arXiv:2506.12618):

- ``src/evals/metrics/memorization.py``: ``probability`` (also over several answers per question: the
  ``*_Q_A_PERT_Prob`` configs), ``probability_w_options``, ``truth_ratio`` (with the
  ``closer_to_1_better`` and ``true_better`` aggregators), ``rouge``, ``exact_memorization``,
  ``extraction_strength``;
- ``src/evals/metrics/utils.py``: ``eval_text_similarity`` (ROUGE-L recall, ``use_stemmer=True``),
  ``aggregate_to_1D`` (how the wrong answers' losses are averaged);
- ``src/evals/metrics/privacy.py``: ``forget_quality`` / ``ks_test`` (KS p-value);
- ``configs/eval/tofu_metrics/*.yaml``: which split and which answer each metric reads, and the harmonic mean
  (``hm_aggregate``) of the nine model-utility numbers.

Notation: ℓ̄(a|q) is the mean per-token NLL of answer a given question q (``PairScore.mean_nll``) and
P(a|q) = exp(−ℓ̄(a|q)) (``PairScore.prob``). Per-example values that cannot be computed (an example without
perturbed answers, an empty answer) are ``None`` and left out of the aggregate, as the reference filters ``None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
from rouge_score import rouge_scorer
from scipy import stats

from unlearnkit.evaluation.scoring.passes import PairScore

EPS = 1e-10  # OpenUnlearning's guard in the truth ratio, its forget aggregator and the normalised probability

TruthRatioAggregator = Literal["closer_to_1_better", "true_better"]

MODEL_UTILITY_INPUTS = (
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE",
    "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised",
    "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
)


@dataclass
class MetricValue:
    """One metric over one split: a value per example (``None`` where undefined) and their aggregate."""

    per_example: list[float | None]
    aggregate: float | None


def mean_of_present(values: Sequence[float | None]) -> float | None:
    """Arithmetic mean of the values that are not ``None``; ``None`` when there are none."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def answer_probability(scores: Sequence[PairScore]) -> MetricValue:
    """Q_A_Prob: per example P(a|q) = exp(−ℓ̄(a|q)); aggregate = mean.

    Reference: ``probability`` in memorization.py (``evaluate_probability``: summed token cross-entropy over the
    answer labels / number of answer labels, then ``exp(-avg_loss)``).
    """
    per_example = [s.prob for s in scores]
    return MetricValue(per_example, mean_of_present(per_example))


def mean_answer_probability(answers: Sequence[Sequence[PairScore]]) -> MetricValue:
    """Q_A_PERT_Prob: per example the mean over its answers of P(a_j|q); aggregate = mean of those.

    Reference: ``probability`` in memorization.py on a dataset with several answers per question (the
    ``perturbed_answer`` list, ``forget_Q_A_PERT_Prob.yaml`` / ``retain_Q_A_PERT_Prob.yaml``): ``run_batchwise_evals``
    gives each example the list of its answers' probabilities and ``aggregate_to_1D`` averages it. An example with
    no answers is ``None``.
    """
    per_example = [math.fsum(s.prob for s in scores) / len(scores) if scores else None for scores in answers]
    return MetricValue(per_example, mean_of_present(per_example))


def normalised_answer_probability(
    correct: Sequence[PairScore], wrong: Sequence[Sequence[PairScore]], eps: float = EPS
) -> MetricValue:
    """Q_A_Prob_normalised: per example P(a|q) / (P(a|q) + Σ_j P(w_j|q) + eps); aggregate = mean.

    Each P is length-normalised (exp of minus the mean token NLL). Reference: ``probability_w_options`` in
    memorization.py, with ``correct`` = ``answer`` and ``wrong`` = the ``perturbed_answer`` list (configs
    ``ra_Q_A_Prob.yaml`` / ``ra_Q_A_PERT_Prob.yaml`` and the world-facts ones). An example with no wrong answers
    is ``None`` here (the ratio would be 1 by construction; the reference data always has them).
    """
    per_example: list[float | None] = []
    for c, ws in zip(correct, wrong, strict=True):
        if not ws:
            per_example.append(None)
            continue
        per_example.append(c.prob / (c.prob + math.fsum(w.prob for w in ws) + eps))
    return MetricValue(per_example, mean_of_present(per_example))


def truth_ratio_of(correct: PairScore, wrong: Sequence[PairScore], eps: float = EPS) -> float:
    """R = P_w / (P_c + eps), with P_c = exp(−ℓ̄(correct)) and P_w = exp(−mean_j ℓ̄(wrong_j)).

    The wrong answers' mean NLLs are averaged before exponentiating (``aggregate_to_1D`` in the reference), so
    P_w is the geometric mean of the wrong answers' length-normalised probabilities.
    """
    wrong_mean_nll = math.fsum(w.mean_nll for w in wrong) / len(wrong)
    return math.exp(-wrong_mean_nll) / (math.exp(-correct.mean_nll) + eps)


def closer_to_1_better(ratios: Sequence[float], eps: float = EPS) -> float:
    """Forget-split aggregate of the truth ratio: mean of min(R, 1/(R + eps))."""
    r = np.asarray(ratios, dtype=np.float64)
    return float(np.mean(np.minimum(r, 1 / (r + eps))))


def true_better(ratios: Sequence[float]) -> float:
    """Retain / real-authors / world-facts aggregate of the truth ratio: mean of max(0, 1 − R)."""
    r = np.asarray(ratios, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, 1 - r)))


def truth_ratio(
    correct: Sequence[PairScore | None],
    wrong: Sequence[Sequence[PairScore]],
    aggregator: TruthRatioAggregator,
    eps: float = EPS,
) -> MetricValue:
    """Truth_Ratio: per example the raw R (:func:`truth_ratio_of`); aggregate by ``aggregator``.

    Reference: ``truth_ratio`` in memorization.py. Forget and retain use ``paraphrased_answer`` as the correct
    answer (``forget_Truth_Ratio.yaml``: ``forget_Q_A_PARA_Prob`` → correct, ``forget_Q_A_PERT_Prob`` → wrong);
    real authors and world facts use ``answer``. The forget split aggregates with ``closer_to_1_better``, the
    others with ``true_better``. The per-example values are what forget quality compares. An example without a
    correct answer or without wrong answers is ``None``.
    """
    per_example: list[float | None] = [
        truth_ratio_of(c, ws, eps) if c is not None and ws else None for c, ws in zip(correct, wrong, strict=True)
    ]
    present = [r for r in per_example if r is not None]
    if not present:
        return MetricValue(per_example, None)
    if aggregator == "closer_to_1_better":
        return MetricValue(per_example, closer_to_1_better(present, eps))
    if aggregator == "true_better":
        return MetricValue(per_example, true_better(present))
    raise ValueError(f"unknown truth-ratio aggregator {aggregator!r}")


def rouge_l_recall(generations: Sequence[str], answers: Sequence[str], use_stemmer: bool = True) -> MetricValue:
    """Q_A_ROUGE: ROUGE-L recall of each greedy generation against the ``answer``; aggregate = mean.

    ROUGE (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries") as computed by the ``rouge_score``
    package: recall = LCS(answer, generation) / len(answer tokens), stemmer on. Reference: ``rouge`` with
    ``rouge_type: rougeL_recall`` (``eval_text_similarity``: ``scorer.score(ground_truth, generation)``). The
    reference's ground truth is the answer decoded back from its tokens; here it is the answer string itself,
    which is the same text for tokenizers that round-trip.
    """
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    per_example = [
        scorer.score(answer, generation)["rougeL"].recall
        for generation, answer in zip(generations, answers, strict=True)
    ]
    return MetricValue(per_example, mean_of_present(per_example))


def mean_rouge_l_recall(generations: Sequence[str], answers: Sequence[Sequence[str]],
                        use_stemmer: bool = True) -> MetricValue:
    """Q_A_PERT_ROUGE: per example the mean over its answers a_j of the ROUGE-L recall of the greedy generation
    against a_j; aggregate = mean of those. ``None`` for an example without answers.

    Reference: ``rouge`` (``rougeL_recall``) on the multi-answer ``perturbed_answer`` dataset
    (``forget_Q_A_PERT_ROUGE.yaml``): every answer's row is generated from the same question prompt (greedy, so
    the same generation), scored against its own answer, and ``aggregate_to_1D`` averages each example's list.
    """
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    per_example: list[float | None] = []
    for generation, options in zip(generations, answers, strict=True):
        recalls = [scorer.score(answer, generation)["rougeL"].recall for answer in options]
        per_example.append(math.fsum(recalls) / len(recalls) if recalls else None)
    return MetricValue(per_example, mean_of_present(per_example))


def exact_memorization_of(matches: Sequence[bool]) -> float | None:
    """EM = (1/T) Σ_t 1[argmax_v p(v | q, a_<t) = a_t]; ``None`` when T = 0 (as the reference).

    "Memorization Without Overfitting: Analyzing the Training Dynamics of Large Language Models", Tirumala et al.
    2022, arXiv:2205.10770. Reference: ``exact_memorization`` in memorization.py, whose token positions
    (``tokenwise_vocab_logprobs``) exclude the final EOS prediction: pass ``PairScore.matches_before_eos``.
    """
    if len(matches) == 0:
        return None
    return sum(bool(m) for m in matches) / len(matches)


def extraction_strength_of(matches: Sequence[bool], reference_loop_edge_case: bool = True) -> float:
    """ES = 1 − k/T, with k the first position from which every later teacher-forced argmax equals the label.

    "Towards Effective Evaluations and Comparisons for LLM Unlearning Methods", Wang et al. 2025,
    arXiv:2406.09179. Reference: ``extraction_strength`` in memorization.py, over the answer tokens without the
    final EOS prediction (pass ``PairScore.matches_before_eos``). Its edge cases, reproduced by default:

    - the search runs ``for k in range(T)`` and stops at the first matching suffix, so when even the last token
      is wrong the loop ends at k = T − 1 and ES = 1/T, not 0. ``reference_loop_edge_case=False`` gives the
      paper's value instead (k = T, ES = 0: only the empty suffix matches);
    - T = 0 gives ES = 0.
    """
    total = len(matches)
    if total == 0:
        return 0.0
    first_of_matching_suffix = total
    for k in range(total - 1, -1, -1):
        if not matches[k]:
            break
        first_of_matching_suffix = k
    if first_of_matching_suffix == total and reference_loop_edge_case:
        first_of_matching_suffix = total - 1
    return 1 - first_of_matching_suffix / total


def exact_memorization(scores: Sequence[PairScore]) -> MetricValue:
    """exact_memorization over a split (forget, question + ``answer``): per example EM, aggregate = mean."""
    per_example = [exact_memorization_of(s.matches_before_eos) for s in scores]
    return MetricValue(per_example, mean_of_present(per_example))


def extraction_strength(scores: Sequence[PairScore], reference_loop_edge_case: bool = True) -> MetricValue:
    """extraction_strength over a split (forget, question + ``answer``): per example ES, aggregate = mean."""
    per_example = [extraction_strength_of(s.matches_before_eos, reference_loop_edge_case) for s in scores]
    return MetricValue(per_example, mean_of_present(per_example))


def forget_quality(truth_ratios: Sequence[float], reference_truth_ratios: Sequence[float]) -> float | None:
    """p-value of the two-sample Kolmogorov–Smirnov test between the forget truth ratios of two models.

    ``reference_truth_ratios`` are the retain model's (the model fine-tuned without the forget set); the retain
    model against itself gives 1.0. Reference: ``forget_quality`` / ``ks_test`` in privacy.py:
    ``scipy.stats.ks_2samp(R_model, R_retain).pvalue`` on the raw per-example truth ratios (an older
    ``get_forget_quality`` in utils.py tested 1/(R + 1e-10); the map is strictly decreasing, so the KS statistic
    and p-value are the same). ``None`` when either side is empty. Values as small as 1e-20 are normal: report
    them as they are (and as log10).
    """
    if len(truth_ratios) == 0 or len(reference_truth_ratios) == 0:
        return None
    return float(stats.ks_2samp(np.asarray(truth_ratios), np.asarray(reference_truth_ratios)).pvalue)


def model_utility(values: Mapping[str, float | None]) -> float | None:
    """Harmonic mean (``scipy.stats.hmean``) of the nine numbers in :data:`MODEL_UTILITY_INPUTS`.

    {Q_A_Prob (retain: unnormalised; real authors, world facts: normalised), Q_A_ROUGE, Truth_Ratio aggregate}
    × {retain, real authors, world facts}. Reference: ``model_utility`` (``hm_aggregate``) in OpenUnlearning's
    TOFU config. ``None`` if any of the nine is missing (e.g. a task without world-facts questions): a harmonic
    mean over fewer numbers would not be comparable. A zero input gives 0.
    """
    inputs = [values.get(name) for name in MODEL_UTILITY_INPUTS]
    if any(v is None for v in inputs):
        return None
    return float(stats.hmean(np.asarray(inputs, dtype=np.float64)))
