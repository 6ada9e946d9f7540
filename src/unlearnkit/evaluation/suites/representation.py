"""Representation-level evaluation of a run: are the forget examples still represented as the target represents them?

Features (mean-pooled hidden states at one layer, :mod:`unlearnkit.evaluation.scoring.pooling`) of the forget, retain and
holdout examples (QA answers, or the text chunks of a raw-text task) under the unlearned, target and retain models
come from each model's scoring pass (``evaluate_tofu`` / ``evaluate_muse_suite`` with ``features=spec``,
``EvalResult.features``): no forward pass of their own. This module picks
the layer and turns the features into CKA of the unlearned (and, as a baseline, the target) model against the
retain model on each split, and how separable the forget examples are from the others under each model
(:func:`unlearnkit.evaluation.metrics.representation.representation_report`).
"""

from __future__ import annotations

import numpy as np

from unlearnkit.config import RepresentationConfig
from unlearnkit.evaluation.scoring.pooling import FeatureSpec, check_layer
from unlearnkit.evaluation.metrics.representation import representation_report


def feature_spec(model_config, cfg: RepresentationConfig, texts: bool = False) -> FeatureSpec:
    """The layer (``cfg.layer``, or the middle block when unset) and pool (``cfg.pool`` for QA answers; every token
    of a chunk for raw texts, ``texts=True``); a layer out of range is a clear error."""
    layers = model_config.num_hidden_layers
    layer = cfg.layer if cfg.layer is not None else layers // 2
    check_layer(layer, layers)
    return FeatureSpec(layer, "all" if texts else cfg.pool)


def representation_results(features: dict[str, dict[str, np.ndarray]], spec: FeatureSpec) -> dict:
    """``features``: model name → split → ``[N, hidden]``, with ``"retain"`` among the names.

    Returns the layer, the pool and one :func:`representation_report` per model other than the retain model.
    """
    return {"layer": spec.layer, "pool": spec.pool,
            **{who: representation_report(features[who], features["retain"]) for who in features if who != "retain"}}
