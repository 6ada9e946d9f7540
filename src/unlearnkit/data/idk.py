"""Refusal ("I don't know") answers for IdkNLL and IdkDPO.

The TOFU reference code draws a random refusal string every time an example is loaded. Here each forget example
gets one refusal string fixed by (seed, index), so that the reference log-probabilities of the preferred answer can
be computed once before training (IdkDPO) instead of by a second model at every step. A reconstruction of the
reference's sampling, chosen for that reason.
"""

from __future__ import annotations

import random


def assign_idk(n_examples: int, idk_answers: list[str], seed: int = 0) -> list[str]:
    """One refusal string per forget example, uniform over ``idk_answers`` and fixed by ``seed``."""
    if not idk_answers:
        raise ValueError("no refusal answers: the task's idk_answers list is empty")
    rng = random.Random(seed)
    return [idk_answers[rng.randrange(len(idk_answers))] for _ in range(n_examples)]
