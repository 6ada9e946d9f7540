"""UA, RA, TA, MIA-Efficacy and Avg. Gap against values worked out by hand and scikit-learn's SVC fitted directly.

Definitions: metrics.md §4; OPTML-Group/Unlearn-Sparse ``evaluation/SVC_MIA.py`` (``SVC(C=3, gamma="auto",
kernel="rbf")`` on the true-class softmax probability; efficacy = 1 − mean prediction on the forget set) and
``main_forget.py`` (members = the first |test| retain examples, non-members = the test set).
"""

import math

import numpy as np
import pytest
from sklearn.svm import SVC

from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import classifier


def test_accuracies_by_hand_one_value_per_model():
    labels = np.array([0, 1, 2, 1])
    one = np.array([[5.0, 0, 0], [0, 3, 1], [1, 0, 0], [0, 0, 2]])  # right, right, wrong, wrong → 50 %
    two = np.array([[5.0, 0, 0], [0, 3, 1], [0, 0, 1], [0, 2, 0]])  # all right → 100 %
    np.testing.assert_array_equal(classifier.accuracy(np.stack([one, two]), labels), [50.0, 100.0])
    np.testing.assert_array_equal(classifier.unlearning_accuracy(np.stack([one, two]), labels), [50.0, 0.0])


def test_true_class_confidence_by_hand():
    """logits (ln 3, 0, 0): softmax (3/5, 1/5, 1/5)."""
    logits = np.array([[math.log(3), 0.0, 0.0]] * 2)
    np.testing.assert_allclose(classifier.true_class_confidence(logits, np.array([0, 2])), [0.6, 0.2], rtol=1e-12)


def test_mia_efficacy_by_hand_and_against_sklearn():
    """Members confident (≈ 0.95–1), non-members not (≈ 0.2–0.6). Forget examples: three like non-members, two like
    members → 3/5 called non-members = 60 %. Retain examples past the first |test| do not enter the fit."""
    rng = np.random.default_rng(0)
    retain = rng.uniform(0.95, 1.0, 30)
    test = rng.uniform(0.2, 0.6, 30)
    forget = np.array([0.3, 0.4, 0.5, 0.98, 0.99])
    assert classifier.mia_efficacy(retain, test, forget) == 60.0
    extra = np.concatenate([retain, np.full(50, 0.4)])  # would pull the boundary if it were used
    assert classifier.mia_efficacy(extra, test, forget) == 60.0

    overlapping_retain = rng.beta(5, 2, 40)
    overlapping_test = rng.beta(3, 3, 25)
    forget = rng.beta(4, 3, 17)
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(
        np.concatenate([overlapping_retain[:25], overlapping_test])[:, None], np.r_[np.ones(25), np.zeros(25)])
    expected = 100 * (1 - attack.predict(forget[:, None]).mean())
    assert classifier.mia_efficacy(overlapping_retain, overlapping_test, forget) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected < 100


def test_classifier_scores_and_average_gap_by_hand():
    eye = np.eye(3) * 4
    forget = (eye[[0, 1, 2, 0]], np.array([0, 1, 0, 0]))  # 3 of 4 right → UA 25
    retain = (np.tile(eye, (4, 1)), np.tile(np.arange(3), 4))  # all right → RA 100
    test = (eye[[0, 1, 2]], np.array([0, 2, 2]))  # 2 of 3 right → TA 66.67
    scores = classifier.classifier_scores(forget, retain, test)
    assert scores.unlearning_accuracy == 25.0 and scores.retain_accuracy == 100.0
    assert scores.test_accuracy == pytest.approx(200 / 3)
    assert 0.0 <= scores.mia_efficacy <= 100.0
    method = classifier.ClassifierScores(10.0, 99.0, 90.0, 20.0)
    retrained = classifier.ClassifierScores(8.0, 100.0, 91.0, 14.0)
    assert classifier.average_gap(method, retrained) == pytest.approx((2 + 1 + 1 + 6) / 4)


def test_bad_input_is_a_one_line_error():
    with pytest.raises(UnlearnkitError, match="do not match"):
        classifier.accuracy(np.zeros((3, 2)), np.zeros(4, dtype=int))
    with pytest.raises(UnlearnkitError, match="labels must lie"):
        classifier.accuracy(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(UnlearnkitError, match="smaller test set"):
        classifier.mia_efficacy(np.ones(3), np.ones(5), np.ones(2))
