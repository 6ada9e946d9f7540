"""Representation-level metrics on frozen feature matrices: CKA, k-NN accuracy and a linear probe.

Source: "Are We Truly Forgetting? A Critical Re-examination of Machine Unlearning Evaluation Protocols"
(arXiv:2503.06991; code yongwookim1/UUEF: ``CKA/CKA.py``, ``main_cka.py``, ``main_knn.py``), specified in
research/metrics.md §5 and methods.md §18. True forgetting should change the *representations*, not only the
outputs: an unlearned model whose features on the forget set still look like the original model's, or from which
the forget examples are still linearly or locally separable, has hidden the data rather than forgotten it. The
reference compares an unlearned image classifier with the model retrained without the forget data; for LLMs the
features are mean-pooled hidden states (:mod:`unlearnkit.evaluation.features`) and the retrained model is the
retain model (fine-tuned on the retain split only). The LLM mapping and the forget-vs-retain labels are a
reconstruction; the paper uses class labels.

Every function takes feature matrices ``[N, d]`` (numpy arrays or torch tensors; computed in float64) and
returns Python floats. Nothing here runs a model.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from unlearnkit.errors import UnlearnkitError


# ------------------------------------------------------------------------------------------------------------ CKA


def linear_cka(x, y) -> float:
    """Linear centred kernel alignment between two representations of the same N examples.

    Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", arXiv:1905.00414 (Eq. 4), as
    computed by UUEF's ``CKA/CKA.py`` (``linear_CKA``)::

        CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)),   K = X Xᵀ,  L = Y Yᵀ,
        HSIC(K, L) = Σ_ij (HKH)_ij (HLH)_ij,                      H = I − 11ᵀ/N

    (the biased HSIC; its 1/(N−1)² factor cancels). Equal to ||Y_cᵀ X_c||_F² / (||X_cᵀ X_c||_F ||Y_cᵀ Y_c||_F)
    with column-centred features. In [0, 1]; 1 for X against itself; invariant to orthogonal transforms and
    isotropic scaling of either side; X and Y may have different widths. NaN when either side is constant over the
    examples (its centred kernel is zero).
    """
    x, y = _paired(x, y)
    return _cka(x @ x.T, y @ y.T)


def rbf_cka(x, y) -> float:
    """CKA with Gaussian (RBF) kernels, each side with its own median-heuristic bandwidth.

    Kornblith et al. 2019 (arXiv:1905.00414) with the bandwidth rule of research/metrics.md §5 and UUEF's
    ``CKA/CKA.py`` (``rbf``, ``kernel_CKA`` with ``sigma=None``)::

        K_ij = exp(−||x_i − x_j||² / (2σ_X²)),   σ_X² = median over i ≠ j of the non-zero ||x_i − x_j||²

    and likewise L with σ_Y from Y; then CKA(K, L) as in :func:`linear_cka`. Kornblith's own ``gram_rbf`` differs:
    σ² = threshold² × the median over *all* N² entries of the distance matrix, zeros of the diagonal included;
    this function follows metrics.md / UUEF (σ = sqrt(median squared distance), zero distances — the diagonal and
    exact duplicates — left out). NaN when all rows of X (or of Y) are identical.
    """
    x, y = _paired(x, y)
    return _cka(_rbf_gram(x), _rbf_gram(y))


def _rbf_gram(x: np.ndarray) -> np.ndarray:
    sq_norms = np.einsum("ij,ij->i", x, x)
    sq_dist = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(sq_dist, 0.0)
    nonzero = sq_dist[sq_dist > 0]
    if nonzero.size == 0:
        return np.ones_like(sq_dist)  # every row identical: a constant kernel, CKA is NaN
    return np.exp(-sq_dist / (2.0 * np.median(nonzero)))


def _cka(k: np.ndarray, l: np.ndarray) -> float:
    kc, lc = _centre(k), _centre(l)
    hsic_kl = np.sum(kc * lc)
    norm = np.sqrt(np.sum(kc * kc) * np.sum(lc * lc))
    return float(hsic_kl / norm) if norm > 0 else float("nan")


def _centre(k: np.ndarray) -> np.ndarray:
    """HKH without forming H: subtract the row means and the column means, add back the grand mean."""
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def _matrix(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise UnlearnkitError(f"{name} must be a 2-D feature matrix [examples, features], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UnlearnkitError(f"{name} contains NaN or infinite values: check the model that produced the features")
    return x


def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _matrix(x, "x"), _matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise UnlearnkitError(
            f"CKA compares the same examples under two models, but x has {x.shape[0]} rows and y {y.shape[0]}: "
            "extract both from the same examples in the same order"
        )
    if x.shape[0] < 2:
        raise UnlearnkitError(f"CKA needs at least 2 examples, got {x.shape[0]}: pass more examples")
    return x, y


# ------------------------------------------------------------------------------------------ k-NN and linear probe


def knn_classifier(k: int = 5) -> KNeighborsClassifier:
    """UUEF's k-NN (``main_knn.py``, ``evaluate_knn``): ``KNeighborsClassifier(n_neighbors=k, metric="cosine")``,
    uniform majority vote among the k training points of smallest cosine distance 1 − cos(x, x')."""
    if k < 1:
        raise UnlearnkitError(f"k must be at least 1, got {k}: pass a positive number of neighbours")
    return KNeighborsClassifier(n_neighbors=k, metric="cosine")


def probe_classifier(seed: int = 0):
    """The linear probe: features standardised (mean 0, variance 1, fitted on the training rows only), then an
    L2-regularised logistic regression (scikit-learn defaults, C = 1, lbfgs, up to 1000 iterations). The
    standardisation is this project's choice (the paper has no LLM probe): hidden states have a few dimensions of
    very large magnitude that would otherwise dominate the regulariser."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))


def knn_accuracy(train_x, train_y, test_x, test_y, k: int = 5) -> float:
    """Accuracy on (test_x, test_y) of the cosine k-NN classifier (:func:`knn_classifier`) fit on the train rows —
    UUEF's protocol (``main_knn.py``: fit on a train split, ``score`` on the test split)."""
    train_x, test_x = _matrix(train_x, "train_x"), _matrix(test_x, "test_x")
    if train_x.shape[0] < k:
        raise UnlearnkitError(f"k-NN with k={k} needs at least {k} training rows, got {train_x.shape[0]}: lower k")
    model = knn_classifier(k).fit(train_x, np.asarray(train_y))
    return float(np.mean(model.predict(test_x) == np.asarray(test_y)))


def probe_accuracy(train_x, train_y, test_x, test_y, seed: int = 0) -> float:
    """Accuracy on (test_x, test_y) of the linear probe (:func:`probe_classifier`) fit on the train rows."""
    train_x, test_x = _matrix(train_x, "train_x"), _matrix(test_x, "test_x")
    model = probe_classifier(seed).fit(train_x, np.asarray(train_y))
    return float(np.mean(model.predict(test_x) == np.asarray(test_y)))


def separability(x, labels, k: int = 5, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """How well the labels (e.g. forget vs retain) can be read from frozen features, by k-fold cross-validation.

    The rows are split by ``StratifiedKFold(folds, shuffle=True, random_state=seed)``; every row is predicted once,
    by a classifier fit on the other folds, and the accuracy is the fraction of rows predicted right (pooled over
    the folds). Returns ``knn_accuracy`` (cosine k-NN, :func:`knn_classifier`), ``probe_accuracy`` (linear probe,
    :func:`probe_classifier`) and ``chance``, the fraction of the largest class (the accuracy of always answering
    it), to read the two against. The cross-validation is this project's choice (UUEF uses one random 80/20
    split): it uses every row and is deterministic for a seed.
    """
    x = _matrix(x, "x")
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],):
        raise UnlearnkitError(f"labels must have one entry per row of x ({x.shape[0]}), got shape {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise UnlearnkitError("separability needs examples of at least two labels, got one: add the other split")
    if folds < 2 or counts.min() < folds:
        raise UnlearnkitError(
            f"{folds}-fold cross-validation needs at least {folds} (and 2 or more folds) examples of each label, "
            f"got {dict(zip(classes.tolist(), counts.tolist()))}: add examples or lower folds"
        )
    smallest_train = x.shape[0] - -(-x.shape[0] // folds)  # N − ceil(N / folds)
    if smallest_train < k:
        raise UnlearnkitError(
            f"k-NN with k={k} needs {k} training rows, but a fold trains on only {smallest_train}: lower k or folds"
        )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    knn_pred = cross_val_predict(knn_classifier(k), x, labels, cv=cv)
    probe_pred = cross_val_predict(probe_classifier(seed), x, labels, cv=cv)
    return {
        "knn_accuracy": float(np.mean(knn_pred == labels)),
        "probe_accuracy": float(np.mean(probe_pred == labels)),
        "chance": float(counts.max() / counts.sum()),
    }


# ------------------------------------------------------------------------------------------------------ the report


def representation_report(
    unlearned_feats: Mapping[str, object],
    retain_feats: Mapping[str, object],
    k: int = 5,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """CKA between the unlearned and the retain model, and forget-vs-other separability under each model.

    ``unlearned_feats`` and ``retain_feats`` map a split name (``"forget"``, ``"retain"``, ``"holdout"``, ...) to
    the ``[N, d]`` features of that split under the unlearned model and under the retain model, the same examples
    in the same order. The result (flat, names as in the rest of the evaluation):

    - ``cka_linear_{split}``, ``cka_rbf_{split}`` for every split present in both (:func:`linear_cka`,
      :func:`rbf_cka`): how close the unlearned model's representation is to the retain model's (1 = the same up to
      rotation and scale);
    - ``{model}_knn_forget_vs_{other}``, ``{model}_probe_forget_vs_{other}`` and ``chance_forget_vs_{other}`` for
      model in (unlearned, retain) and every other split of that model (:func:`separability`, labels forget = 1,
      other = 0). Read them against the retain model's: the retain model never saw the forget data, so its
      separability is what "forgotten" looks like.
    """
    report: dict[str, float] = {}
    for split in [s for s in unlearned_feats if s in retain_feats]:
        report[f"cka_linear_{split}"] = linear_cka(unlearned_feats[split], retain_feats[split])
        report[f"cka_rbf_{split}"] = rbf_cka(unlearned_feats[split], retain_feats[split])
    for model, feats in (("unlearned", unlearned_feats), ("retain", retain_feats)):
        if "forget" not in feats:
            raise UnlearnkitError(f"the {model} model's features have no 'forget' split: add features['forget']")
        forget = _matrix(feats["forget"], f"{model} forget features")
        for other in [s for s in feats if s != "forget"]:
            rest = _matrix(feats[other], f"{model} {other} features")
            if rest.shape[1] != forget.shape[1]:
                raise UnlearnkitError(
                    f"the {model} model's forget and {other} features differ in width ({forget.shape[1]} vs "
                    f"{rest.shape[1]}): extract both from the same layer"
                )
            labels = np.r_[np.ones(len(forget), dtype=int), np.zeros(len(rest), dtype=int)]
            scores = separability(np.vstack([forget, rest]), labels, k=k, folds=folds, seed=seed)
            report[f"{model}_knn_forget_vs_{other}"] = scores["knn_accuracy"]
            report[f"{model}_probe_forget_vs_{other}"] = scores["probe_accuracy"]
            report[f"chance_forget_vs_{other}"] = scores["chance"]
    return report
