"""Zero-shot multiple-choice accuracy (WMDP, MMLU), declared for the raw-text suite, as lm-evaluation-harness's ``acc``.

For each question the suite scores every continuation (``" A"``, ``" B"``, …) after the question's prompt
(:meth:`unlearnkit.data.multiple_choice.MultipleChoice.context`; tokenized as lm-evaluation-harness does, see
:func:`unlearnkit.evaluation.scoring.continuations.score_continuations`); the model's choice is the one of highest
summed log-likelihood (the first of equal ones, as ``np.argmax`` there), and ``acc`` is the fraction of questions
where it is the right one. lm-evaluation-harness's ``acc_norm`` (divided by the choice's length in bytes) is not
computed: the WMDP paper and its task configs report ``acc``, and for one-letter choices the two rank alike.

==========================  ================  ====================================================================
metric                      data              value
==========================  ================  ====================================================================
forget_mcq_accuracy         task.forget_mcq   accuracy on the knowledge to remove (WMDP: chance is 1/4)
retain_mcq_accuracy         task.retain_mcq   accuracy on the knowledge to keep (MMLU)
==========================  ================  ====================================================================
"""

from __future__ import annotations

import math
from typing import Sequence

from unlearnkit.evaluation.metrics.registry import Computed, Inputs, Metric, register


def chosen(loglikelihoods: Sequence[float]) -> int:
    """The index of the highest log-likelihood (the first of equal ones)."""
    return max(range(len(loglikelihoods)), key=lambda i: (loglikelihoods[i], -i))


def correctness(questions, scores: dict) -> list[float]:
    """1.0 where the model's choice is the right answer, else 0.0, per question; ``scores`` maps (context,
    continuation) to its teacher-forced score."""
    out = []
    for question in questions:
        context = question.context()
        lls = [math.fsum(scores[(context, c)].token_logprobs) for c in question.continuations()]
        out.append(1.0 if chosen(lls) == question.answer else 0.0)
    return out


def _declare(name: str, split: str, meaning: str, better: str) -> None:
    def plan(task, plan) -> None:
        if getattr(task, split, None):
            plan.choices.append(split)

    def compute(inputs: Inputs) -> Computed:
        questions = getattr(inputs.task, split, None) or []
        values = correctness(questions, inputs.scores)
        return Computed(sum(values) / len(values) if values else None, {name: values})

    register(Metric(name, "muse", meaning, better, compute, plan, paired="mean", headline=True))


def declare_accuracies() -> None:
    """Declare both metrics (called by :mod:`.muse_table`, so that they follow MUSE's own in the table)."""
    _declare("forget_mcq_accuracy", "forget_mcq",
             "zero-shot multiple-choice accuracy on the knowledge to remove (WMDP; chance = 1 / choices)", "retain")
    _declare("retain_mcq_accuracy", "retain_mcq",
             "zero-shot multiple-choice accuracy on the knowledge to keep (MMLU)", "higher")
