"""The relearning attack: fine-tune a copy of a model on a few examples and follow the forget metrics.

Protocol (research/metrics.md §6, research/methods.md §2 and §17): fine-tune the unlearned model on a small part of
the forget set with AdamW and re-evaluate the forget metrics; "LLM Unlearning Under the Microscope" uses 100 steps,
batch 4, lr 2e-5 (the defaults here). Reference code: ``OPTML-Group/Unlearn-Smooth`` ``src/model/relearn.py``
(AdamW, weight decay 0, 10% warm-up). Chosen here: **constant learning rate, no warm-up, weight decay 0** (the
Microscope setting states no schedule; pass ``warmup_steps=steps // 10`` for the reference's warm-up, which then
stays constant instead of decaying). The same run on the retain model is the honest baseline: it shows how much
of the "recovery" is simply learning the k examples from scratch. The caller chooses the examples (forget
examples for the attack, retain or unrelated ones as a control; :func:`pick_examples` draws k of them).

Recovered fraction of what unlearning removed, per metric m (metrics.md §6)::

    recovered(m) = (m_after − m_unlearned) / (m_target − m_unlearned)

with ``m_unlearned`` the attacked model before relearning, ``m_after`` after it and ``m_target`` the target
model's value. 0 = nothing recovered, 1 = back to the target; it is signed and unbounded (overshoot > 1, further
forgetting < 0) and direction-free (the same formula for metrics where lower means more knowledge). Undefined
(``None``) when ``|m_target − m_unlearned| < tol``: unlearning removed nothing measurable.

How the curve is measured: the training loop's ``on_step`` hook evaluates the model after each chosen optimizer
step, with the random state saved and restored (the evaluation draws nothing from the training stream); the model
as given is evaluated first, through the result store (it is not an attacked copy: its scores are usually there
already, from the run's own evaluation). Every requested metric is computed at the first and the last point; in
between only those that need no generated answer (teacher-forced: Q_A_Prob, Truth_Ratio, extraction strength …),
unless ``curve_generation=True``: generation is most of an evaluation's cost, and the recovered fractions read only
the two ends. A metric not computed at a point is ``None`` in the curve. Relearning runs in one process.
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from unlearnkit.attacks.evaluation import check_evaluator, evaluate_attacked
from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.evaluation.metrics import registry
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.gradient_sync import is_distributed
from unlearnkit.training.loop import train
from unlearnkit.training.objectives import FineTune

FORGET_METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio", "extraction_strength")
DEFAULT_TOLERANCE = 1e-4
UNDEFINED_AGREE = "undefined: target and unlearned agree"
UNDEFINED_MISSING = "undefined: metric not computed"


@dataclass
class RelearnResult:
    """A relearning run: ``curve[metric][i]`` is the metric after ``steps[i]`` optimizer steps (``steps[0] == 0``).

    ``train_logs`` holds the loop's log of every optimizer step; ``settings`` the run's hyper-parameters.
    """

    steps: list[int]
    curve: dict[str, list[float | None]]
    train_logs: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def before(self) -> dict[str, float | None]:
        return {name: values[0] for name, values in self.curve.items()}

    def after(self) -> dict[str, float | None]:
        return {name: values[-1] for name, values in self.curve.items()}

    def to_dict(self) -> dict:
        return {"steps": self.steps, "curve": self.curve, "settings": self.settings,
                "train_loss": [log["loss"] for log in self.train_logs]}


@dataclass(frozen=True)
class Recovery:
    """A recovered fraction, or ``None`` with the reason it is undefined."""

    value: float | None
    reason: str | None = None


def recovered_fraction(after: float | None, unlearned: float | None, target: float | None,
                       tol: float = DEFAULT_TOLERANCE) -> Recovery:
    """``(after − unlearned) / (target − unlearned)``; undefined when ``|target − unlearned| < tol`` or a value is
    missing. Source: research/metrics.md §6 ("the recovered fraction of what unlearning removed")."""
    if after is None or unlearned is None or target is None or not all(map(math.isfinite, (after, unlearned, target))):
        return Recovery(None, UNDEFINED_MISSING)
    removed = target - unlearned
    if abs(removed) < tol:
        return Recovery(None, UNDEFINED_AGREE)
    return Recovery((after - unlearned) / removed)


def pick_examples(examples: Sequence[QAExample], k: int, seed: int = 0) -> list[QAExample]:
    """``k`` distinct examples drawn uniformly without replacement (``random.Random(seed)``), in their original order."""
    if not 1 <= k <= len(examples):
        raise UnlearnkitError(f"cannot pick {k} relearning examples from {len(examples)}: choose k between 1 and "
                              f"{len(examples)}")
    chosen = sorted(random.Random(seed).sample(range(len(examples)), k))
    return [examples[i] for i in chosen]


def teacher_forced(evaluator: Evaluator, metrics: Sequence[str]) -> list[str]:
    """Those of ``metrics`` whose evaluation generates no answer (with every metric they depend on)."""
    from unlearnkit.evaluation.suites.tofu import plan_tofu

    return [name for name in metrics if not plan_tofu(evaluator.task, [name]).questions]


def evaluation_steps(steps: int, eval_every: int) -> list[int]:
    """0, eval_every, 2·eval_every, … and always ``steps`` itself."""
    return sorted(set(range(0, steps + 1, eval_every)) | {steps})


def relearn(model: nn.Module, evaluator: Evaluator, examples: Sequence[QAExample], steps: int = 100,
            batch_size: int = 4, learning_rate: float = 2e-5, eval_every: int = 10,
            metrics: Sequence[str] = FORGET_METRICS, seed: int = 0, output_dir: Path | None = None,
            warmup_steps: int = 0, reference: dict | None = None, progress: bool = False,
            curve_generation: bool = False) -> RelearnResult:
    """Fine-tune a copy of ``model`` (left untouched) on ``examples`` for ``steps`` AdamW steps and evaluate
    ``metrics`` with ``evaluator`` (its task, formatter, batch size and answer length) after 0, ``eval_every``,
    2·``eval_every``, … and ``steps`` steps.

    Training: answer-token NLL (:class:`FineTune`) of the examples encoded by the evaluator's formatter,
    ``batch_size`` examples a step cycling through ``examples`` in seeded order, constant ``learning_rate`` after
    ``warmup_steps`` of linear warm-up, weight decay 0, no clipping. ``output_dir`` keeps the loop's final
    checkpoint (the relearned model); by default a temporary folder is used and deleted. ``reference`` is the retain
    model's reference statistics (for forget_quality or privleak). The evaluations of relearned copies keep nothing
    in the result store and draw no intervals (:func:`~unlearnkit.attacks.evaluation.evaluate_attacked`); the one
    of the model as given reads and fills the store. Between the first and the last point only the metrics that need
    no generation are computed, unless ``curve_generation`` (the module docstring).
    """
    check_evaluator(evaluator, "relearn", qa=True)
    if not examples:
        raise UnlearnkitError("no relearning examples: give at least one (e.g. pick_examples(task.forget, k))")
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
        raise UnlearnkitError(f"eval_every={eval_every!r} is invalid: it must be a whole number >= 1")
    if is_distributed():
        raise UnlearnkitError("relearn runs in one process: start it without accelerate launch / torchrun")
    wanted = registry.resolve(evaluator.suite, metrics)  # unknown names fail here, before any training
    formatter = evaluator.formatter
    config = TrainConfig.checked(max_steps=steps, batch_size=batch_size, learning_rate=learning_rate, weight_decay=0.0,
                                 warmup_steps=warmup_steps, schedule="constant", seed=seed, save_every_epoch=False)
    points = evaluation_steps(steps, eval_every)
    curve: dict[str, list[float | None]] = {name: [] for name in metrics}
    between = wanted if curve_generation else registry.resolve(evaluator.suite, teacher_forced(evaluator, metrics))

    def evaluate(candidate: nn.Module, chosen: set[str], store: bool = False) -> None:
        device = next(candidate.parameters()).device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), \
                torch.autocast(device.type, enabled=False):
            if store:
                result = evaluator.evaluate(candidate, reference, metrics=chosen, intervals=False, store=True,
                                            progress=False)
            else:
                result = evaluate_attacked(evaluator, candidate, reference, metrics=chosen, progress=False)
        for name in metrics:
            curve[name].append(result.aggregates.get(name))

    def after_step(step: int, candidate: nn.Module, log: dict) -> None:
        if step in points:
            evaluate(candidate, wanted if step == points[-1] else between)

    encoded = [formatter.encode(ex.question, ex.answer) for ex in examples]
    evaluate(model, wanted, store=True)  # step 0: the model as given
    attacked = copy.deepcopy(model)
    with tempfile.TemporaryDirectory(prefix="unlearnkit-relearn-") as scratch:
        run = train(attacked, FineTune(), encoded, None, None, formatter.pad_token_id, config,
                    Path(output_dir) if output_dir is not None else Path(scratch), progress=progress,
                    on_step=after_step)
    settings = {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "warmup_steps": warmup_steps,
                "schedule": "constant", "weight_decay": 0.0, "optimizer": "AdamW", "seed": seed,
                "examples": len(examples), "eval_every": eval_every, "curve_generation": curve_generation}
    return RelearnResult(points, curve, run.logs, settings)


def relearn_report(unlearned: RelearnResult, target: RelearnResult | Mapping[str, float | None],
                   retain: RelearnResult | None = None, tol: float = DEFAULT_TOLERANCE) -> dict:
    """Curves and recovered fractions of a relearning attack, as plain JSON-ready data.

    ``target`` is the target model's relearning result (its values before relearning are ``m_target``) or simply
    its metric values. Each attacked model (``unlearned``, and ``retain`` as the baseline) gets, per metric, the
    recovered fraction at the end of relearning and at every evaluation point, each measured from its own value
    before relearning. The target's own curve is included when given (relearning it should change little).
    """
    target_values = target.before() if isinstance(target, RelearnResult) else dict(target)
    curves = {"unlearned": unlearned.to_dict()}
    attacked = {"unlearned": unlearned}
    if retain is not None:
        curves["retain"] = retain.to_dict()
        attacked["retain"] = retain
    if isinstance(target, RelearnResult):
        curves["target"] = target.to_dict()
    fractions: dict[str, dict] = {}
    for who, result in attacked.items():
        fractions[who] = {}
        for name, values in result.curve.items():
            start, goal = values[0], target_values.get(name)
            points = [recovered_fraction(v, start, goal, tol) for v in values]
            fractions[who][name] = {"value": points[-1].value, "reason": points[-1].reason,
                                    "curve": [p.value for p in points], "before": start, "after": values[-1],
                                    "target": goal}
    return {"target_values": target_values, "curves": curves, "recovered_fraction": fractions, "tolerance": tol}
