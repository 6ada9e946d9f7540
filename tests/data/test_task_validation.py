from __future__ import annotations

import pytest

from unlearnkit.data.types import QAExample, Task
from unlearnkit.data.validation import validate_task
from unlearnkit.errors import UnlearnkitError

A = QAExample("Who is A?", "A is a poet.")
B = QAExample("Who is B?", "B is a baker.")
C = QAExample("Who is C?", "C is a sailor.")
D = QAExample("Who is D?", "D is a nurse.")


def test_a_valid_task_passes():
    validate_task(Task("ok", forget=[A], retain=[B, C], holdout=[D]))


def test_empty_forget_set():
    with pytest.raises(UnlearnkitError, match="^the forget set is empty: task 't'"):
        validate_task(Task("t", forget=[], retain=[B]))


def test_empty_retain_set():
    with pytest.raises(UnlearnkitError, match="^the retain set is empty"):
        validate_task(Task("t", forget=[A], retain=[]))


def test_rows_in_forget_and_retain_are_counted_and_the_first_named():
    # same question and answer up to whitespace counts as the same row; same question, other answer does not
    spaced_b = QAExample("Who  is B? ", "B is a baker.")
    other_answer = QAExample("Who is C?", "C is a tailor.")
    with pytest.raises(UnlearnkitError, match=r"^2 rows are in both the forget and the retain set \(first: question "
                                              r"'Who is A\?', answer 'A is a poet.'\): .*remove it from one"):
        validate_task(Task("t", forget=[A, B, C], retain=[A, spaced_b, other_answer]))


def test_one_shared_row_is_singular():
    with pytest.raises(UnlearnkitError, match=r"^1 row is in both the forget and the retain set"):
        validate_task(Task("t", forget=[A], retain=[A, B]))


@pytest.mark.parametrize("other", ["forget", "retain"])
def test_holdout_overlap(other):
    splits = {"forget": [A], "retain": [B]}
    shared = splits[other][0]
    with pytest.raises(UnlearnkitError, match=rf"^1 row is in both the holdout and the {other} set.*unseen"):
        validate_task(Task("t", **splits, holdout=[C, shared]))


def test_long_questions_are_shortened_in_the_message():
    long = QAExample("Why " + "very " * 40 + "long?", "Because.")
    with pytest.raises(UnlearnkitError) as err:
        validate_task(Task("t", forget=[long], retain=[long]))
    assert "..." in str(err.value) and "\n" not in str(err.value)
