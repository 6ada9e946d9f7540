"""Representation-level evaluation of a run: are the forget examples still represented as the target represents them?

Features (mean-pooled hidden states at one layer, :func:`unlearnkit.evaluation.features.layer_features`) of the
forget, retain and holdout examples under the unlearned, target and retain models; CKA of the unlearned (and, as a
baseline, the target) model against the retain model on each split, and how separable the forget examples are from
the others under each model (:func:`unlearnkit.evaluation.representation.representation_report`).
"""

from __future__ import annotations

from unlearnkit.config import RepresentationConfig
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import Task
from unlearnkit.evaluation.features import layer_features
from unlearnkit.evaluation.representation import representation_report


def representation_layer(model, cfg: RepresentationConfig) -> int:
    return cfg.layer if cfg.layer is not None else model.config.num_hidden_layers // 2


def evaluate_representations(models: dict, formatter: QAFormatter, task: Task, cfg: RepresentationConfig,
                             batch_size: int = 16) -> dict:
    """``models``: name → model, with ``"retain"`` among them. Returns the layer and one report per other model."""
    layer = representation_layer(models["retain"], cfg)
    splits = {name: [(e.question, e.answer) for e in examples] for name, examples in
              (("forget", task.eval_forget), ("retain", task.eval_retain), ("holdout", task.holdout)) if examples}
    features = {who: {split: layer_features(model, formatter, pairs, layer, batch_size, cfg.pool)
                      for split, pairs in splits.items()} for who, model in models.items()}
    return {"layer": layer, "pool": cfg.pool,
            **{who: representation_report(features[who], features["retain"]) for who in models if who != "retain"}}
