"""Checks a :class:`Task` once, at the edge, before any model is touched.

A task is rejected when the forget or the retain set is empty, when a row is both forgotten and retained, or when
a holdout row (meant to be unseen by every model) is also in the forget or retain set. Two rows are the same when
their question and answer are equal up to surrounding and repeated whitespace.
"""

from __future__ import annotations

from unlearnkit.data.types import QAExample, Task
from unlearnkit.errors import DataError

_SHOWN_CHARS = 80


def _row_key(example: QAExample) -> tuple[str, str]:
    return " ".join(example.question.split()), " ".join(example.answer.split())


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")


def _check_disjoint(first: list[QAExample], first_name: str, second: list[QAExample], second_name: str,
                    fix: str) -> None:
    second_keys = {_row_key(example) for example in second}
    shared = [example for example in first if _row_key(example) in second_keys]
    if shared:
        rows = "1 row is" if len(shared) == 1 else f"{len(shared)} rows are"
        raise DataError(f"{rows} in both the {first_name} and the {second_name} set (first: question "
                              f"{_shown(shared[0].question)}, answer {_shown(shared[0].answer)}): {fix}")


def validate_task(task: Task) -> None:
    """Raise :class:`UnlearnkitError` naming the problem and the fix if ``task`` cannot be unlearned/evaluated."""
    if not task.forget:
        raise DataError(f"the forget set is empty: task '{task.name}' has nothing to forget; give at least "
                              "one question/answer row to forget")
    if not task.retain:
        raise DataError(f"the retain set is empty: task '{task.name}' has nothing to keep; give at least "
                              "one question/answer row to retain (methods and utility metrics need it)")
    _check_disjoint(task.forget, "forget", task.retain, "retain",
                    "a row cannot be both forgotten and kept; remove it from one of the two")
    _check_disjoint(task.holdout, "holdout", task.forget, "forget",
                    "holdout rows must be unseen by every model; remove them from the holdout")
    _check_disjoint(task.holdout, "holdout", task.retain, "retain",
                    "holdout rows must be unseen by every model; remove them from the holdout")
