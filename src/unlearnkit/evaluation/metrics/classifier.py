"""Classifier unlearning metrics of the OPTML papers: UA, RA, TA, MIA-Efficacy and the average gap to retraining.

Sources: "Model Sparsity Can Simplify Machine Unlearning", Jia et al. 2023, arXiv:2304.04934, and "SalUn:
Empowering Machine Unlearning via Gradient-based Weight Saliency", Fan et al. 2024, arXiv:2310.12508; their code,
OPTML-Group/Unlearn-Sparse and Unlearn-Saliency (``evaluation/SVC_MIA.py``; ``main_forget.py`` builds the
MIA-Efficacy inputs). unlearnkit research notes: metrics.md §4.

- UA (unlearning accuracy) = 100 − accuracy on the forget set; RA = accuracy on the retain set; TA = accuracy on
  the test set; all in percent.
- MIA-Efficacy: an RBF support-vector classifier (``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")``) is fitted on
  one feature, the softmax probability of the true class, of the first |test| retain examples (label 1, members)
  and of the test examples (label 0, non-members); efficacy = 100 × the share of forget examples it calls
  non-members. Higher = the forget set looks less like training data (retraining's value is the target, not 100).
- Avg. Gap = the mean over {UA, RA, TA, MIA-Efficacy} of |method − retrain|, retrain being the model trained from
  scratch on the retain set; lower is better.

Inputs are arrays (logits or probabilities, labels), so the functions do not depend on how models are trained or
run. Run-time efficiency, the papers' fifth column, is a time measured by whoever runs the method, not a function
of outputs, and is not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import softmax
from sklearn.svm import SVC

from unlearnkit.errors import UnlearnkitError

SVC_C = 3.0
SVC_GAMMA = "auto"


@dataclass(frozen=True)
class ClassifierScores:
    """One model's UA, RA, TA and MIA-Efficacy, in percent."""

    unlearning_accuracy: float
    retain_accuracy: float
    test_accuracy: float
    mia_efficacy: float

    def values(self) -> tuple[float, float, float, float]:
        return self.unlearning_accuracy, self.retain_accuracy, self.test_accuracy, self.mia_efficacy


def accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Percent of rows whose arg-max is the label; ``logits`` (..., n, classes) → (...) (one value per model)."""
    logits, labels = _checked(logits, labels)
    return 100.0 * (logits.argmax(axis=-1) == labels).mean(axis=-1)


def unlearning_accuracy(forget_logits: np.ndarray, forget_labels: np.ndarray) -> np.ndarray:
    """UA = 100 − accuracy on the forget set (percent)."""
    return 100.0 - accuracy(forget_logits, forget_labels)


def true_class_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The softmax probability of the true class, per row of ``logits`` (..., n, classes)."""
    logits, labels = _checked(logits, labels)
    probabilities = softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    index = labels.reshape((1,) * (logits.ndim - 2) + (-1, 1))
    return np.take_along_axis(probabilities, index, axis=-1)[..., 0]


def mia_efficacy(retain_confidence: np.ndarray, test_confidence: np.ndarray, forget_confidence: np.ndarray) -> float:
    """Percent of forget examples an SVC (C = 3, RBF, gamma "auto") on the true-class confidence calls non-members.

    Fitted on the first |test| retain confidences (members) and the test confidences (non-members), as the OPTML
    code's ``Subset(retain, range(len(test)))``.
    """
    retain_confidence, test_confidence, forget_confidence = (
        np.asarray(values, dtype=np.float64).reshape(-1) for values in (retain_confidence, test_confidence,
                                                                        forget_confidence))
    if test_confidence.size == 0 or forget_confidence.size == 0:
        raise UnlearnkitError("MIA-Efficacy needs test and forget examples: the task has an empty split")
    if retain_confidence.size < test_confidence.size:
        raise UnlearnkitError(f"MIA-Efficacy fits on as many retain examples as test examples ({test_confidence.size}) "
                              f"but the retain set has {retain_confidence.size}: use a smaller test set")
    members = retain_confidence[:test_confidence.size]
    features = np.concatenate([members, test_confidence])[:, None]
    targets = np.concatenate([np.ones(members.size), np.zeros(test_confidence.size)])
    attack = SVC(C=SVC_C, gamma=SVC_GAMMA, kernel="rbf").fit(features, targets)
    return float(100.0 * (1.0 - attack.predict(forget_confidence[:, None]).mean()))


def classifier_scores(forget: tuple[np.ndarray, np.ndarray], retain: tuple[np.ndarray, np.ndarray],
                      test: tuple[np.ndarray, np.ndarray]) -> ClassifierScores:
    """UA, RA, TA and MIA-Efficacy of one model from its (logits, labels) on the forget, retain and test sets."""
    for name, (logits, _) in (("forget", forget), ("retain", retain), ("test", test)):
        if np.ndim(logits) != 2:
            raise UnlearnkitError(f"the {name} logits must be one model's (examples, classes) array, "
                                  f"got shape {np.shape(logits)}")
    confidences = [true_class_confidence(*split) for split in (retain, test, forget)]
    return ClassifierScores(
        unlearning_accuracy=float(unlearning_accuracy(*forget)),
        retain_accuracy=float(accuracy(*retain)),
        test_accuracy=float(accuracy(*test)),
        mia_efficacy=mia_efficacy(*confidences),
    )


def average_gap(method: ClassifierScores, retrained: ClassifierScores) -> float:
    """Avg. Gap: the mean |method − retrain| over UA, RA, TA and MIA-Efficacy (percentage points)."""
    return float(np.mean(np.abs(np.subtract(method.values(), retrained.values()))))


def _checked(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim < 2 or labels.ndim != 1 or logits.shape[-2] != labels.shape[0] or labels.size == 0:
        raise UnlearnkitError(f"logits of shape {logits.shape} do not match labels of shape {labels.shape}: pass "
                              "logits (..., examples, classes) and one label per example, at least one example")
    if labels.min() < 0 or labels.max() >= logits.shape[-1]:
        raise UnlearnkitError(f"labels must lie in 0..{logits.shape[-1] - 1} (the logits have {logits.shape[-1]} "
                              "classes)")
    return logits, labels
