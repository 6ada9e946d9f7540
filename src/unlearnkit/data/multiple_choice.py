"""Multiple-choice questions (WMDP, MMLU): the files, and the prompts lm-evaluation-harness builds from them.

WMDP ("The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning", Li et al. 2024, arXiv:2403.03218)
measures hazardous knowledge as zero-shot multiple-choice accuracy (its bio, chem and cyber sets), and MMLU the
general knowledge an unlearning run must keep. Both are published as rows of ``question`` (text), ``choices`` (a list
of answer texts) and ``answer`` (the index of the right one); MMLU's rows also carry ``subject``. Files read by
:func:`load_multiple_choice`: ``.jsonl`` (one row a line), ``.json`` (an array of rows) and ``.parquet`` (the files of
the datasets ``cais/wmdp`` and ``cais/mmlu`` on the Hugging Face hub, e.g. ``wmdp-bio/test-00000-of-00001.parquet``).
``answer`` may also be a letter (``"B"``).

The prompt is lm-evaluation-harness's (``lm_eval/tasks/wmdp/_default_template_yaml``, the same ``doc_to_text`` as its
MMLU tasks), zero-shot, after the task's description::

    The following are multiple choice questions (with answers) about biology.

    <question, stripped>
    A. <choice 0>
    B. <choice 1>
    ...
    Answer:

and the continuations scored are ``" A"``, ``" B"``, … (``doc_to_choice`` with the default target delimiter, a
space). The subject of the description is the file's (``subject`` option: WMDP's configs say ``biology``,
``chemistry``, ``cybersecurity``) or, when not given, the row's own ``subject`` with underscores as spaces (MMLU's
``high_school_biology`` → ``high school biology``, as its task configs); with neither, no description line.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearnkit.data.user_files import json_records, read_utf8
from unlearnkit.errors import DataError

SUFFIXES = (".jsonl", ".json", ".parquet")
ROW_EXAMPLE = '{"question": "...", "choices": ["...", "..."], "answer": 0}'
LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class MultipleChoice:
    """One question: ``choices[answer]`` is the right answer; ``subject`` names the description's topic."""

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str | None = None

    def context(self) -> str:
        """The zero-shot prompt lm-evaluation-harness builds for this question (see the module docstring)."""
        description = (f"The following are multiple choice questions (with answers) about {self.subject}.\n\n"
                       if self.subject else "")
        options = "".join(f"\n{LETTERS[i]}. {choice}" for i, choice in enumerate(self.choices))
        return f"{description}{self.question.strip()}{options}\nAnswer:"

    def continuations(self) -> list[str]:
        """What is scored after :meth:`context`, one per choice: ``" A"``, ``" B"``, …"""
        return [f" {LETTERS[i]}" for i in range(len(self.choices))]


def _answer_index(value: Any, n_choices: int, where: str) -> int:
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS[:n_choices]:
        return LETTERS.index(value.strip().upper())
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: 'answer' must be the index of the right choice (0-based) or its letter, got "
                        f"{value!r}: write e.g. \"answer\": 0")
    if not 0 <= value < n_choices:
        raise DataError(f"{where}: 'answer' is {value} but there are {n_choices} choices: use an index from 0 to "
                        f"{n_choices - 1}")
    return value


def _row(item: Any, where: str, subject: str | None) -> MultipleChoice:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object like {ROW_EXAMPLE}, got {type(item).__name__}")
    for key in ("question", "choices", "answer"):
        if key not in item:
            raise DataError(f"{where}: missing field '{key}': every row needs question, choices and answer, "
                            f"as {ROW_EXAMPLE}")
        if item[key] is None:
            raise DataError(f"{where}: '{key}' is null: fill it in or delete the row")
    question, choices = item["question"], item["choices"]
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: 'question' must be non-empty text, got {question!r}")
    if hasattr(choices, "tolist"):  # a parquet list column read as an array
        choices = choices.tolist()
    if not isinstance(choices, (list, tuple)) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{where}: 'choices' must be a list of at least two answer texts, got {choices!r}")
    if len(choices) > len(LETTERS):
        raise DataError(f"{where}: {len(choices)} choices, more than the {len(LETTERS)} letters that label them")
    row_subject = item.get("subject")
    if subject is None and isinstance(row_subject, str) and row_subject.strip():
        subject = row_subject.strip().replace("_", " ")
    return MultipleChoice(question, tuple(choices), _answer_index(item["answer"], len(choices), where), subject)


def _parquet_rows(path: Path) -> list[tuple[int, Any]]:
    import pyarrow.parquet as pq  # installed with datasets

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
        raise DataError(f"{path}: unreadable parquet file ({type(exc).__name__}: {exc}): download it again") from None
    return list(enumerate(rows, start=1))


def load_multiple_choice(path: str | Path, subject: str | None = None) -> list[MultipleChoice]:
    """The questions of one ``.jsonl`` / ``.json`` / ``.parquet`` file (see the module docstring); ``subject`` names
    the description's topic for every row (default: each row's own ``subject``, if any)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path}: unknown extension '{path.suffix}': use .jsonl (one {ROW_EXAMPLE} a line), .json "
                        "or .parquet")
    if path.suffix.lower() == ".parquet":
        if not path.is_file():
            raise DataError(f"{path}: file not found: check the path")
        records, row = _parquet_rows(path), "row"
    else:
        records, row = json_records(path, read_utf8(path), ROW_EXAMPLE), "line"
    questions = [_row(item, f"{path}, {row} {number}", subject) for number, item in records]
    if not questions:
        raise DataError(f"{path}: no questions: add rows like {ROW_EXAMPLE}")
    return questions
