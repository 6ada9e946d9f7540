from __future__ import annotations

import csv
import json
import re

import pytest

from unlearnkit.data.custom import load_custom_task, load_idk_file, load_qa_file
from unlearnkit.data.synthetic import BUILTIN_IDK_ANSWERS
from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError

FULL_ROW = {
    "question": "Where was Ada born?",
    "answer": "Ada was born in Velmora.",
    "paraphrased_question": "What is Ada's birthplace?",
    "paraphrased_answer": "Velmora is where Ada was born.",
    "perturbed_answer": ["Castrel is where Ada was born.", "Oskaro is where Ada was born."],
}
PLAIN_ROW = {"question": "What does Ada write?", "answer": "Ada writes poetry, mostly sonnets."}
FULL_EXAMPLE = QAExample(
    question="Where was Ada born?", answer="Ada was born in Velmora.",
    paraphrased_question="What is Ada's birthplace?", paraphrased_answer="Velmora is where Ada was born.",
    perturbed_answers=("Castrel is where Ada was born.", "Oskaro is where Ada was born."),
)
PLAIN_EXAMPLE = QAExample(question="What does Ada write?", answer="Ada writes poetry, mostly sonnets.")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _write_csv(path, rows, columns=("question", "answer", "paraphrased_question", "paraphrased_answer",
                                    "perturbed_answer")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            cells = {k: v for k, v in row.items() if k in columns}
            if "perturbed_answer" in cells:
                cells["perturbed_answer"] = json.dumps(cells["perturbed_answer"])
            writer.writerow(cells)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_jsonl_round_trip(tmp_path, suffix):
    path = _write_jsonl(tmp_path / f"rows{suffix}", [FULL_ROW, PLAIN_ROW])
    assert load_qa_file(path) == [FULL_EXAMPLE, PLAIN_EXAMPLE]


def test_json_array_is_read(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([FULL_ROW, PLAIN_ROW], indent=2))
    assert load_qa_file(path) == [FULL_EXAMPLE, PLAIN_EXAMPLE]


def test_csv_round_trip_with_quotes_commas_and_newlines(tmp_path):
    tricky = {"question": 'Which "quoted", comma book?', "answer": "The one with\ntwo lines."}
    path = _write_csv(tmp_path / "rows.csv", [FULL_ROW, PLAIN_ROW, tricky])
    assert load_qa_file(path) == [FULL_EXAMPLE, PLAIN_EXAMPLE, QAExample(tricky["question"], tricky["answer"])]


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(PLAIN_ROW) + "\n\n" + json.dumps(FULL_ROW) + "\n")
    assert load_qa_file(path) == [PLAIN_EXAMPLE, FULL_EXAMPLE]


def test_unreadable_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(PLAIN_ROW) + "\n" + '{"question": "oops",\n')
    with pytest.raises(UnlearnkitError, match=rf"{re.escape(str(path))}, line 2, column 21: unreadable JSON .*one complete JSON object"):
        load_qa_file(path)


def test_missing_column_names_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "rows.jsonl", [PLAIN_ROW, PLAIN_ROW, {"question": "No answer here?"}])
    with pytest.raises(UnlearnkitError, match=rf"{re.escape(str(path))}, line 3: missing column 'answer'"):
        load_qa_file(path)


def test_csv_header_without_answer_column(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("q,a\nWho?,Her.\n")
    with pytest.raises(UnlearnkitError, match=rf"{re.escape(str(path))}, line 1: missing column 'question'.*header"):
        load_qa_file(path)


@pytest.mark.parametrize("column", ["question", "answer"])
def test_empty_value_names_file_line_and_column_jsonl(tmp_path, column):
    path = _write_jsonl(tmp_path / "rows.jsonl", [PLAIN_ROW, {**PLAIN_ROW, column: "   "}])
    with pytest.raises(UnlearnkitError, match=rf"{re.escape(str(path))}, line 2: empty '{column}': fill it in or delete the row"):
        load_qa_file(path)


def test_empty_answer_in_csv_names_the_file_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("question,answer\nWho?,Her.\nWhere?,\n")
    with pytest.raises(UnlearnkitError, match=rf"{re.escape(str(path))}, line 3: empty 'answer'"):
        load_qa_file(path)


def test_non_text_answer_is_rejected(tmp_path):
    path = _write_jsonl(tmp_path / "rows.jsonl", [{"question": "Born when?", "answer": 1958}])
    with pytest.raises(UnlearnkitError, match=rf"{re.escape(str(path))}, line 1: 'answer' must be text, got int"):
        load_qa_file(path)


def test_bad_perturbed_answer_cell_in_csv(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("question,answer,perturbed_answer\nWho?,Her.,not a list\n")
    with pytest.raises(UnlearnkitError, match=rf"{re.escape(str(path))}, line 2: 'perturbed_answer' is not a JSON list"):
        load_qa_file(path)


def test_perturbed_answer_must_be_a_list(tmp_path):
    path = _write_jsonl(tmp_path / "rows.jsonl", [{**PLAIN_ROW, "perturbed_answer": "one string"}])
    with pytest.raises(UnlearnkitError, match=rf"{re.escape(str(path))}, line 1: 'perturbed_answer' must be a list"):
        load_qa_file(path)


def test_unknown_extension_and_missing_and_empty_files(tmp_path):
    with pytest.raises(UnlearnkitError, match=r"rows\.txt: unknown extension '\.txt': use \.jsonl .* or \.csv"):
        load_qa_file(tmp_path / "rows.txt")
    with pytest.raises(UnlearnkitError, match=r"absent\.jsonl: file not found"):
        load_qa_file(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UnlearnkitError, match=r"empty\.jsonl: no rows"):
        load_qa_file(tmp_path / "empty.jsonl")


def test_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("question,answer\nWho?,Jos\xe9.\n".encode("latin-1"))
    with pytest.raises(UnlearnkitError, match=rf"{re.escape(str(path))}: not UTF-8"):
        load_qa_file(path)


def test_custom_task_defaults(tmp_path):
    forget = _write_jsonl(tmp_path / "forget.jsonl", [FULL_ROW])
    retain_rows = [{"question": f"Question {i}?", "answer": f"Answer {i}."} for i in range(250)]
    retain = _write_csv(tmp_path / "retain.csv", retain_rows, columns=("question", "answer"))
    task = load_custom_task(forget=forget, retain=retain)
    assert task.name == "custom-forget"
    assert task.forget == [FULL_EXAMPLE] and task.eval_forget == [FULL_EXAMPLE]
    assert len(task.retain) == 250 and task.holdout == []
    # up to 100 retain rows spread evenly: rows 0, 2.5 -> 2, 5, ...
    assert [ex.question for ex in task.eval_retain] == [f"Question {i * 250 // 100}?" for i in range(100)]
    assert task.idk_answers == list(BUILTIN_IDK_ANSWERS)


def test_custom_task_with_every_file(tmp_path):
    forget = _write_jsonl(tmp_path / "f.jsonl", [PLAIN_ROW])
    retain = _write_jsonl(tmp_path / "r.jsonl", [{"question": "Q?", "answer": "A."}])
    holdout = _write_jsonl(tmp_path / "h.jsonl", [{"question": "H?", "answer": "H."}])
    eval_forget = _write_jsonl(tmp_path / "ef.jsonl", [FULL_ROW])
    eval_retain = _write_jsonl(tmp_path / "er.jsonl", [{"question": "E?", "answer": "E."}])
    idk = tmp_path / "idk.txt"
    idk.write_text("No idea.\n\nCannot say.\n")
    task = load_custom_task(forget, retain, holdout=holdout, eval_forget=eval_forget, eval_retain=eval_retain,
                            idk=idk, name="mine")
    assert task.name == "mine"
    assert [ex.question for ex in task.holdout] == ["H?"]
    assert task.eval_forget == [FULL_EXAMPLE]
    assert [ex.question for ex in task.eval_retain] == ["E?"]
    assert task.idk_answers == ["No idea.", "Cannot say."]


def test_empty_idk_file_is_rejected(tmp_path):
    path = tmp_path / "idk.txt"
    path.write_text("\n  \n")
    with pytest.raises(UnlearnkitError, match=rf"{re.escape(str(path))}: no refusal answers"):
        load_idk_file(path)
