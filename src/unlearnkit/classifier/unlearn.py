"""The classifier unlearning methods, run on every member of a batched ensemble at once: ``unlearn`` dispatches.

``unlearn(original, task, forget, method, params)`` returns a new :class:`Ensemble` whose member i is member i of
``original`` unlearned (the original is left as it is). Every member runs the method with its own data order and
random labels, drawn from its seed (``member_generator(seed, epoch, stream=1)``), so member i is what the method
gives on model i alone. Each iterative method is SGD (momentum, weight decay, constant learning rate, as OPTML's
``iterative_unlearn``) on a weighted cross-entropy: one step is, per member, a batch of (example, label, weight) and
the loss Σ weight · CE(f(x), label). The methods:

- ``retrain`` (exact unlearning, the gold standard): the members trained from scratch on the retain set with the
  original's model and recipe and seeds (``train_ensemble(..., forget=forget)``, cached). Cost: a full training.
- ``finetune`` (FT; Warnecke et al. 2023, as in OPTML-Group/Unlearn-Saliency ``unlearn/FT.py``): CE on retain
  batches, weight 1/B. Defaults: 10 epochs, lr 0.01 (the repository's README command for FT).
- ``ga`` (gradient ascent; Thudi et al. 2022, OPTML ``unlearn/GA.py``): −CE on forget batches, weight −1/B.
  Defaults: 5 epochs, lr 1e-4 (README command for GA).
- ``random_labels`` (RL; Golatkar et al. 2020 as in OPTML ``unlearn/RL.py``, its CIFAR-100 branch): each epoch,
  one shuffled pass over forget ∪ retain, the forget examples relabelled uniformly at random over all classes (a
  label may equal the true one, as there), drawn anew each epoch. Defaults: 10 epochs, lr 0.01 [choice: the README's
  RL commands use a saliency mask (SalUn) with lr 0.1; without the mask we keep FT's 0.01].
- ``neggrad_plus`` (NegGrad+; Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning", arXiv 2302.09880):
  β·CE(retain batch) − (1 − β)·CE(forget batch). An epoch is one pass over the retain set; forget batches follow
  each member's own order of the forget set, restarted when it runs out [choice]. Defaults: β = 0.999, 5 epochs,
  lr 0.01 [not checked against the authors' code].

Every iterative method: momentum 0.9, weight decay 5e-4 (OPTML's arg-parser defaults), batch 64 [choice: OPTML uses
256 on CIFAR; digits' forget sets are about 130 examples]. Cost per step: one forward and backward of each member
on one batch (NegGrad+: two batches).

The defaults are the references' settings for a CIFAR-10 ResNet-18, not tuned here (the OPTML papers tune each
method per task to minimise the gap to retraining). On digits with the default MLP they leave ``ga`` (lr 1e-4, two
steps per epoch) and ``neggrad_plus`` (β = 0.999) almost inert: forget accuracy stays at 1.00 for a random 10 % and
for a class, where retraining gives 0.97 and 0.00; ``random_labels`` reaches 0.07 on the class.

The engine and the plans of these four are in ``steps.py``. The methods of the seed papers, each in its own module:
``l1_sparse`` and ``prune`` (``sparse.py``, Jia et al. 2023), ``salun`` (``salun.py``, Fan et al. 2024), ``scrub``
(``scrub.py``, Kurmanji et al. 2023), ``boundary_shrink`` (``boundary.py``, Chen et al. 2023), ``iau`` (``iau.py``,
Liu et al. 2025), ``oracle_matching`` and ``dmm`` (``dmm.py``, Georgiev et al. 2024), ``hamu`` (``hamu.py``, Chen et
al. 2026).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unlearnkit.classifier import boundary, dmm, hamu, iau, salun, scrub, sparse
from unlearnkit.classifier.data import ClassifierTask, retain_indices
from unlearnkit.classifier.ensemble import Ensemble, train_ensemble
from unlearnkit.classifier.options import Options, check
from unlearnkit.classifier.steps import PLANS, descend, random_labels
from unlearnkit.errors import UnlearnkitError


class RetrainParams(Options):
    pass


def _basic(name: str) -> Callable[..., Ensemble]:
    def run(original: Ensemble, task: ClassifierTask, forget: np.ndarray, retain: np.ndarray, opts) -> Ensemble:
        steps = PLANS[name][1](opts, original.seeds, forget, retain, task.train.y, task.num_classes)
        return descend(original, task.train.x, steps, opts)
    return run


# name -> (its options, run(original, task, forget, retain, options) -> unlearned ensemble)
METHODS: dict[str, tuple[type[Options], Callable[..., Ensemble]]] = {
    **{name: (params, _basic(name)) for name, (params, _) in PLANS.items()},
    "l1_sparse": (sparse.L1SparseParams, sparse.l1_sparse),
    "prune": (sparse.PruneParams, sparse.prune_then_unlearn),
    "salun": (salun.SalUnParams, salun.salun),
    "scrub": (scrub.SCRUBParams, scrub.scrub),
    "boundary_shrink": (boundary.BoundaryShrinkParams, boundary.boundary_shrink),
    "iau": (iau.IAUParams, iau.iau),
    "oracle_matching": (dmm.OracleMatchingParams, dmm.oracle_matching),
    "dmm": (dmm.DMMParams, dmm.dmm),
    "hamu": (hamu.HAMUParams, hamu.hamu),
}
# name -> one line for `unlearnkit methods --track classifier` (formulas and sources: each module's docstring)
SUMMARIES: dict[str, str] = {
    "retrain": "exact unlearning: the members trained anew without the forget set (the gold standard)",
    "finetune": "fine-tune on the retain set (Warnecke et al. 2023)",
    "ga": "gradient ascent on the forget set (Thudi et al. 2022)",
    "random_labels": "train on forget ∪ retain with the forget labels drawn at random (Golatkar et al. 2020)",
    "neggrad_plus": "β·CE(retain) − (1 − β)·CE(forget) (Kurmanji et al. 2023)",
    "l1_sparse": "fine-tune on the retain set with a decaying ℓ1 penalty (Jia et al. 2023)",
    "prune": "prune by magnitude, then unlearn (Jia et al. 2023)",
    "salun": "random labels on the weights of highest forget-gradient saliency only (Fan et al. 2024)",
    "scrub": "max-min distillation: away from the original on forget, toward it on retain (Kurmanji et al. 2023)",
    "boundary_shrink": "relabel forget examples to their nearest wrong class found by an attack (Chen et al. 2023)",
    "iau": "one influence-approximation step: retain minus forget gradient (Liu et al. 2025)",
    "oracle_matching": "fit the outputs of models retrained without the forget set (Georgiev et al. 2024)",
    "dmm": "fit datamodel-predicted outputs, from your datamodel scores (Georgiev et al. 2024)",
    "hamu": "trust-region steps: least retain loss with the forget loss raised by a set amount (Chen et al. 2026)",
}
USES_CACHE = {"oracle_matching"}  # methods that train retrained models (cached under cache_dir)
PARAMS: dict[str, type[Options]] = {"retrain": RetrainParams, **{k: v[0] for k, v in METHODS.items()}}


def unlearn(original: Ensemble, task: ClassifierTask, forget: np.ndarray, method: str,
            params: dict[str, Any] | None = None, cache_dir: Path | None = None) -> Ensemble:
    """Each member of ``original`` unlearned of the training examples ``forget`` by ``method``."""
    if method not in PARAMS:
        raise UnlearnkitError(f"unknown classifier unlearning method {method!r}: use one of {', '.join(PARAMS)}")
    opts = check(PARAMS[method], dict(params or {}), f"classifier method {method!r}")
    forget = np.asarray(forget)
    retain = retain_indices(task, forget)
    if len(forget) == 0:
        raise UnlearnkitError("classifier unlearning: the forget set is empty; give the indices to forget")
    forget = forget.astype(np.int64)
    if method == "retrain":
        if original.model is None or original.recipe is None:
            raise UnlearnkitError("retrain needs the original's model and recipe: train it with train_ensemble")
        return train_ensemble(task, original.model, original.recipe, original.seeds, forget=forget,
                              cache_dir=cache_dir, device=next(iter(original.params.values())).device)
    if method in USES_CACHE:
        return METHODS[method][1](original, task, forget, retain, opts, cache_dir=cache_dir)
    return METHODS[method][1](original, task, forget, retain, opts)


__all__ = ["METHODS", "PARAMS", "SUMMARIES", "descend", "random_labels", "unlearn"]
