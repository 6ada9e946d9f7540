"""Your own QA data: JSON Lines or CSV files of question/answer rows, grouped into a :class:`Task`.

A row has ``question`` and ``answer`` (required, non-empty text) and optionally ``paraphrased_question``,
``paraphrased_answer`` and ``perturbed_answer`` (the wrong answers of the truth ratio). Other columns are ignored.

- ``.jsonl`` / ``.json``: one JSON object a line (TOFU's files are JSON Lines despite the ``.json`` ending); a
  ``.json`` file holding one JSON array of objects is read too. ``perturbed_answer`` is a list of strings.
- ``.csv``: a header row naming the columns; ``perturbed_answer`` is a JSON-encoded list in one cell, e.g.
  ``"[""wrong one"", ""wrong two""]"``. Empty optional cells count as absent.

Every problem is raised as :class:`UnlearnkitError` naming the file, the 1-based line and the fix.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from unlearnkit.data.idk import BUILTIN_IDK_ANSWERS
from unlearnkit.data.types import QAExample, Task
from unlearnkit.data.user_files import json_records, read_utf8
from unlearnkit.errors import DataError

REQUIRED_COLUMNS = ("question", "answer")
OPTIONAL_TEXT_COLUMNS = ("paraphrased_question", "paraphrased_answer")
PERTURBED_COLUMN = "perturbed_answer"
JSON_SUFFIXES = (".jsonl", ".json")
CSV_SUFFIXES = (".csv",)
EVAL_RETAIN_SIZE = 100


def qa_example_from_row(row: Any, where: str) -> QAExample:
    """One row (a mapping of column -> value) as a :class:`QAExample`; ``where`` ("file, line N") prefixes errors.

    ``perturbed_answer`` must be a list of strings (absent, ``None`` or ``""`` means no perturbed answers).
    """
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected a JSON object with 'question' and 'answer', got "
                              f"{type(row).__name__}: write one object per line")
    for column in REQUIRED_COLUMNS:
        if column not in row:
            raise DataError(f"{where}: missing column '{column}': every row needs 'question' and 'answer'")
        if row[column] is None:
            raise DataError(f"{where}: '{column}' is null: write the {column} as text, or delete the row")
        value = row[column]
        if not isinstance(value, str):
            raise DataError(f"{where}: '{column}' must be text, got {type(value).__name__} {value!r}: "
                                  "put it in quotes")
        if not value.strip():
            raise DataError(f"{where}: empty '{column}': fill it in or delete the row")
    optional = {}
    for column in OPTIONAL_TEXT_COLUMNS:
        value = row.get(column)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: '{column}' must be text, got {type(value).__name__}: put it in quotes")
        optional[column] = value if value and value.strip() else None
    return QAExample(
        question=row["question"],
        answer=row["answer"],
        paraphrased_question=optional["paraphrased_question"],
        paraphrased_answer=optional["paraphrased_answer"],
        perturbed_answers=_perturbed_answers(row.get(PERTURBED_COLUMN), where),
    )


def _perturbed_answers(value: Any, where: str) -> tuple[str, ...]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(f"{where}: '{PERTURBED_COLUMN}' must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _json_list_cell(cell: str, where: str) -> Any:
    """A CSV cell holding a JSON-encoded list, decoded (its content is checked by ``qa_example_from_row``)."""
    try:
        return json.loads(cell)
    except json.JSONDecodeError:
        raise DataError(f"{where}: '{PERTURBED_COLUMN}' is not a JSON list: write the cell as "
                              '["wrong answer 1", "wrong answer 2"]') from None


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, Mapping[str, str]]]:
    """(1-based line number where the row ends, row) for a CSV file with a header row."""
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = reader.fieldnames or []
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise DataError(f"{path}, line 1: missing column '{missing[0]}' in the header {header}: the first "
                              "row must name the columns, e.g. question,answer")
    try:
        for row in reader:
            cells = {column: value or "" for column, value in row.items() if column is not None}
            if not any(value.strip() for value in cells.values()):
                continue  # a line of empty cells
            if cells.get(PERTURBED_COLUMN, "").strip():
                cells[PERTURBED_COLUMN] = _json_list_cell(cells[PERTURBED_COLUMN], f"{path}, line {reader.line_num}")
            yield reader.line_num, cells
    except csv.Error as err:
        raise DataError(f"{path}, line {reader.line_num}: unreadable CSV ({err}): check the quoting of "
                              "that line") from None


def load_qa_file(path: str | Path) -> list[QAExample]:
    """The QA rows of one ``.jsonl``/``.json`` (JSON Lines) or ``.csv`` (header row) file, in file order."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in JSON_SUFFIXES + CSV_SUFFIXES:
        raise DataError(f"{path}: unknown extension '{path.suffix}': use .jsonl (one JSON object a line) "
                              "or .csv (a header row with question,answer)")
    text = read_utf8(path)
    rows = (_csv_rows(path, text) if suffix in CSV_SUFFIXES
            else json_records(path, text, '{"question": "...", "answer": "..."}'))
    examples = [qa_example_from_row(row, f"{path}, line {number}") for number, row in rows]
    if not examples:
        raise DataError(f"{path}: no rows: add question/answer rows to the file")
    return examples


def load_idk_file(path: str | Path) -> list[str]:
    """Refusal answers, one per line of a plain text file (as TOFU's idontknow.jsonl); blank lines skipped."""
    path = Path(path)
    answers = [line.strip() for line in read_utf8(path).splitlines() if line.strip()]
    if not answers:
        raise DataError(f"{path}: no refusal answers: write one refusal sentence per line")
    return answers


def _evenly_spaced(examples: list[QAExample], size: int) -> list[QAExample]:
    """Up to ``size`` examples spread over the whole list (deterministic, keeps the file order)."""
    if len(examples) <= size:
        return list(examples)
    return [examples[i * len(examples) // size] for i in range(size)]


def load_custom_task(forget: str | Path, retain: str | Path, holdout: str | Path | None = None,
                     eval_forget: str | Path | None = None, eval_retain: str | Path | None = None,
                     idk: str | Path | None = None, name: str | None = None) -> Task:
    """A task from your own files (see the module docstring for the format).

    ``eval_forget`` defaults to the forget rows and ``eval_retain`` to up to 100 retain rows spread evenly over the
    file; the truth-ratio metrics need ``paraphrased_answer`` and ``perturbed_answer`` in those rows and are
    skipped without them. ``holdout`` (rows of the same kind that no model was trained on) enables membership
    inference; without it that metric is skipped. ``idk`` is a text file of refusal answers, one per line;
    without it the built-in list :data:`unlearnkit.data.idk.BUILTIN_IDK_ANSWERS` is used.
    """
    forget_rows = load_qa_file(forget)
    retain_rows = load_qa_file(retain)
    return Task(
        name=name or f"custom-{Path(forget).stem}",
        forget=forget_rows,
        retain=retain_rows,
        holdout=load_qa_file(holdout) if holdout is not None else [],
        eval_forget=load_qa_file(eval_forget) if eval_forget is not None else list(forget_rows),
        eval_retain=(load_qa_file(eval_retain) if eval_retain is not None
                     else _evenly_spaced(retain_rows, EVAL_RETAIN_SIZE)),
        idk_answers=load_idk_file(idk) if idk is not None else list(BUILTIN_IDK_ANSWERS),
    )
