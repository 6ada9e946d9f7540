"""The pure metric functions on hand-made inputs whose values are worked out by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from unlearnkit.evaluation.metrics import mia
from unlearnkit.evaluation.metrics import tofu as tofu_metrics
from unlearnkit.evaluation.scoring.passes import PairScore


def score(logprobs, matches=None, ends_with_eos=True):
    matches = matches if matches is not None else [False] * len(logprobs)
    return PairScore(list(logprobs), list(matches), ends_with_eos)


def test_pair_score_probability_and_eos_trimming():
    s = score([math.log(0.5), math.log(0.25), math.log(0.125)], [True, False, True])
    assert s.mean_nll == pytest.approx(2 * math.log(2))  # (1 + 2 + 3) ln2 / 3
    assert s.prob == pytest.approx(0.25)
    assert s.logprobs_before_eos == s.token_logprobs[:2]
    assert s.matches_before_eos == [True, False]
    truncated = score([-1.0, -2.0], [True, False], ends_with_eos=False)
    assert truncated.matches_before_eos == [True, False]


def test_extraction_strength_by_hand():
    es = tofu_metrics.extraction_strength_of
    assert es([True, True, True, True]) == 1.0  # k = 0
    assert es([False, True, True, True]) == pytest.approx(0.75)  # k = 1
    assert es([True, False, True, True]) == pytest.approx(0.5)  # k = 2: only the suffix from position 2 matches
    assert es([True, True, False, True]) == pytest.approx(0.25)  # k = 3
    # the reference's loop stops at k = T - 1 when even the last token is wrong: ES = 1/T instead of 0
    assert es([True, True, True, False]) == pytest.approx(0.25)
    assert es([True, True, True, False], reference_loop_edge_case=False) == 0.0
    assert es([False]) == pytest.approx(1.0)  # T = 1, k = 0 by the reference's loop
    assert es([]) == 0.0


def test_exact_memorization_by_hand():
    em = tofu_metrics.exact_memorization_of
    assert em([True, False, True, True]) == pytest.approx(0.75)
    assert em([False, False]) == 0.0
    assert em([]) is None
    # over PairScores the final EOS prediction is left out, as the reference does
    value = tofu_metrics.exact_memorization([score([-1, -1, -1], [True, False, False]), score([-1, -1], [True, True])])
    assert value.per_example == [0.5, 1.0]
    assert value.aggregate == pytest.approx(0.75)
    es = tofu_metrics.extraction_strength([score([-1, -1, -1, -1], [False, True, True, False])])
    assert es.per_example == [pytest.approx(2 / 3)]  # matches before EOS: F T T -> k = 1 of 3


def test_truth_ratio_by_hand():
    correct = score([math.log(0.5)] * 2)  # P_c = 0.5
    wrong = [score([math.log(0.1)] * 3), score([math.log(0.4)])]  # mean NLL = (ln10 + ln2.5)/2 -> P_w = sqrt(0.04)
    r = tofu_metrics.truth_ratio_of(correct, wrong)
    assert r == pytest.approx(0.2 / (0.5 + 1e-10), rel=1e-12)
    forget = tofu_metrics.truth_ratio([correct, correct], [wrong, [score([math.log(0.8)])]], "closer_to_1_better")
    r2 = 0.8 / (0.5 + 1e-10)
    assert forget.per_example == [pytest.approx(r), pytest.approx(r2)]
    assert forget.aggregate == pytest.approx((min(r, 1 / (r + 1e-10)) + min(r2, 1 / (r2 + 1e-10))) / 2)
    assert forget.aggregate == pytest.approx((0.4 + 0.625) / 2)
    retain = tofu_metrics.truth_ratio([correct, correct], [wrong, [score([math.log(0.8)])]], "true_better")
    assert retain.aggregate == pytest.approx((0.6 + 0.0) / 2)
    missing = tofu_metrics.truth_ratio([None, correct], [[], wrong], "true_better")
    assert missing.per_example[0] is None and missing.aggregate == pytest.approx(0.6)


def test_normalised_probability_by_hand():
    correct = score([math.log(0.6)])
    wrong = [score([math.log(0.2)]), score([math.log(0.1), math.log(0.1)])]
    value = tofu_metrics.normalised_answer_probability([correct, correct], [wrong, []])
    assert value.per_example[0] == pytest.approx(0.6 / (0.6 + 0.3 + 1e-10))
    assert value.per_example[1] is None
    assert value.aggregate == pytest.approx(0.6 / 0.9)


def test_rouge_l_recall_uses_stemmer_and_recall():
    # stemmed tokens: answer [author, wrote, book]; generation [the, author, wrote, mani, book]
    # LCS = 3 -> recall 3/3 = 1.0 (precision 3/5, F1 0.75); without the stemmer only "wrote" matches (1/3)
    value = tofu_metrics.rouge_l_recall(["the author wrote many book"], ["Authors wrote books"])
    assert value.per_example == [pytest.approx(1.0)]
    plain = tofu_metrics.rouge_l_recall(["the author wrote many book"], ["Authors wrote books"], use_stemmer=False)
    assert plain.per_example == [pytest.approx(1 / 3)]
    two = tofu_metrics.rouge_l_recall(["a b c", "x"], ["a c d e", "y"], use_stemmer=False)
    assert two.per_example == [pytest.approx(0.5), 0.0] and two.aggregate == pytest.approx(0.25)


def test_forget_quality_and_model_utility_agree_with_scipy():
    a, b = [0.1, 0.5, 0.9, 1.3, 0.7], [0.2, 0.25, 2.0, 3.0]
    assert tofu_metrics.forget_quality(a, b) == stats.ks_2samp(a, b).pvalue
    assert tofu_metrics.forget_quality(a, a) == 1.0
    assert tofu_metrics.forget_quality([], b) is None
    nine = {name: 0.1 * (i + 1) for i, name in enumerate(tofu_metrics.MODEL_UTILITY_INPUTS)}
    expected = 9 / sum(1 / v for v in nine.values())
    assert tofu_metrics.model_utility(nine) == pytest.approx(expected)
    assert tofu_metrics.model_utility(nine) == pytest.approx(stats.hmean(list(nine.values())))
    assert tofu_metrics.model_utility({**nine, "wf_Q_A_ROUGE": None}) is None
    assert tofu_metrics.model_utility({**nine, "wf_Q_A_ROUGE": 0.0}) == 0.0


def test_min_k_auc_and_privleak_by_hand():
    lp = [-0.1, -3.0, -0.5, -2.0, -0.2]  # k = 0.4 of 5 tokens -> the 2 lowest: -3, -2
    assert mia.min_k_percent_score(lp) == pytest.approx(2.5)
    assert mia.min_k_percent_score([-1.0, -4.0]) == pytest.approx(4.0)  # max(1, int(0.8)) = 1 token
    assert mia.min_k_percent_score([]) == 0.0
    # forget scores lower (member-like) than every holdout score -> AUC 1
    assert mia.mia_auc([0.1, 0.2], [0.3, 0.4, 0.5]) == 1.0
    # of the 4 (forget, holdout) pairs only (0.3, 0.4) has the holdout scoring higher -> 1/4
    assert mia.mia_auc([0.3, 0.5], [0.2, 0.4]) == pytest.approx(0.25)
    assert mia.mia_auc([], [0.1]) is None
    assert mia.privleak(0.5, 0.5) == pytest.approx(0.0)
    assert mia.privleak(1.0, 0.5) == pytest.approx(-100.0, abs=1e-6)
    assert mia.privleak(0.3, 0.6) == pytest.approx((0.7 - 0.4) / 0.4 * 100)


def test_min_k_matches_numpy_of_reference_formula():
    rng = np.random.default_rng(0)
    lp = rng.normal(-2, 1, size=13)
    expected = -np.sort(lp)[: int(13 * 0.4)].mean()
    assert mia.min_k_percent_score(lp.tolist()) == pytest.approx(expected)
