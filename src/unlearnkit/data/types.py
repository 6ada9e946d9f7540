"""Plain data objects shared by every stage: one QA example, and the task that groups the splits.

A :class:`Task` is everything one unlearning request needs: what to forget, what to keep, the evaluation splits
and a holdout split of people never trained on (for membership inference). It knows nothing about methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QAExample:
    """One question/answer pair, with the optional evaluation variants TOFU provides.

    ``paraphrased_answer`` is the "correct" answer of the truth ratio on forget/retain splits; ``perturbed_answers``
    are the wrong answers (5 for forget/retain, 3 for real authors and world facts).
    """

    question: str
    answer: str
    paraphrased_question: str | None = None
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()


@dataclass
class Task:
    """The data of one unlearning request.

    - ``forget`` / ``retain``: training splits (the target model saw both, the retain model only ``retain``).
    - ``holdout``: examples of the same distribution that neither model was trained on (membership inference);
      empty when the data source has none.
    - ``eval_forget`` / ``eval_retain`` / ``real_authors`` / ``world_facts``: the TOFU evaluation splits; a split
      may be empty when the source does not provide it, and the metrics that need it are then skipped.
    - ``idk_answers``: refusal strings for IdkNLL / IdkDPO.
    """

    name: str
    forget: list[QAExample]
    retain: list[QAExample]
    holdout: list[QAExample] = field(default_factory=list)
    eval_forget: list[QAExample] = field(default_factory=list)
    eval_retain: list[QAExample] = field(default_factory=list)
    real_authors: list[QAExample] = field(default_factory=list)
    world_facts: list[QAExample] = field(default_factory=list)
    idk_answers: list[str] = field(default_factory=list)

    @property
    def full(self) -> list[QAExample]:
        """What the target model is fine-tuned on: retain followed by forget (holdout excluded)."""
        return self.retain + self.forget

    def texts(self) -> list[str]:
        """Every string of the task, e.g. to train a tokenizer on."""
        out: list[str] = []
        splits = (self.forget, self.retain, self.holdout, self.eval_forget, self.eval_retain,
                  self.real_authors, self.world_facts)
        for split in splits:
            for ex in split:
                out += [ex.question, ex.answer]
                out += [s for s in (ex.paraphrased_question, ex.paraphrased_answer) if s]
                out += list(ex.perturbed_answers)
        return out + list(self.idk_answers)
