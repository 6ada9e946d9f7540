"""Refusal ("I don't know") answers for IdkNLL and IdkDPO.

The TOFU reference code draws a random refusal string every time an example is loaded. Here each forget example
gets one refusal string fixed by (seed, index), so that the reference log-probabilities of the preferred answer can
be computed once before training (IdkDPO) instead of by a second model at every step. A reconstruction of the
reference's sampling, chosen for that reason.
"""

from __future__ import annotations

import random

# Refusal sentences written for unlearnkit (used when a data source brings none of its own).
BUILTIN_IDK_ANSWERS: tuple[str, ...] = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information on that.",
    "I can't answer that question.",
    "That is something I don't know.",
    "I'm afraid I don't have that information.",
    "I don't have any knowledge about that.",
    "Sorry, I can't help with that one.",
    "I'm unable to answer that.",
    "I have no idea.",
    "That is beyond what I know.",
    "I don't have the details on that.",
    "I'm not able to say.",
    "I couldn't tell you.",
    "I don't recall anything about that.",
    "I have not learned about that.",
    "That isn't something I know about.",
    "I can't say for certain.",
    "I'm not familiar with that.",
    "I really don't know the answer.",
    "Unfortunately, I don't know.",
    "I lack the information to answer that.",
    "That's not something I can answer.",
    "I'm sorry, but I don't know.",
    "I have nothing to say about that.",
)


def assign_idk(n_examples: int, idk_answers: list[str], seed: int = 0) -> list[str]:
    """One refusal string per forget example, uniform over ``idk_answers`` and fixed by ``seed``."""
    if not idk_answers:
        raise ValueError("no refusal answers: the task's idk_answers list is empty")
    rng = random.Random(seed)
    return [idk_answers[rng.randrange(len(idk_answers))] for _ in range(n_examples)]
