"""Zero-shot multiple-choice accuracy (WMDP / MMLU) as lm-evaluation-harness computes ``acc``: the prompt string of
its ``lm_eval/tasks/wmdp/_default_template_yaml`` written out by hand, its (context, continuation) tokenization
(``HFLM._encode_pair``: trailing context space moved to the continuation, the continuation's tokens cut from the whole
string's, no special tokens), and the accuracy against a naive one-sequence-at-a-time recomputation; the file
loaders (jsonl, json array, parquet as on the hub) and their one-line errors."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tiny_lm import fit, tiny_lm

from unlearnkit.data.corpus import CorpusTask
from unlearnkit.data.formatting import collate
from unlearnkit.data.multiple_choice import MultipleChoice, load_multiple_choice
from unlearnkit.errors import DataError
from unlearnkit.evaluation.scoring.continuations import encode_continuation
from unlearnkit.evaluation.suites.muse import evaluate_muse_suite

ROWS = [
    {"question": "Which organ pumps blood? ", "choices": ["Lung", "Heart", "Liver", "Skin"], "answer": 1},
    {"question": "What is 2 + 2?", "choices": ["3", "5", "4", "22"], "answer": 2},
    {"question": "Which gas do plants take in?", "choices": ["CO2", "Helium", "Neon", "Argon"], "answer": 0},
    {"question": "Which is a prime number?", "choices": ["4", "6", "8", "7"], "answer": 3},
    {"question": "What colour is the sky?", "choices": ["Green", "Blue", "Red", "Black"], "answer": 1},
    {"question": "Which animal barks?", "choices": ["Cat", "Cow", "Dog", "Fish"], "answer": 2},
]


def test_the_prompt_is_lm_eval_harness_wmdp_template():
    question = MultipleChoice("  Which organ pumps blood? ", ("Lung", "Heart", "Liver", "Skin"), 1, "biology")
    assert question.context() == ("The following are multiple choice questions (with answers) about biology.\n\n"
                                  "Which organ pumps blood?\nA. Lung\nB. Heart\nC. Liver\nD. Skin\nAnswer:")
    assert question.continuations() == [" A", " B", " C", " D"]
    assert MultipleChoice("Q?", ("x", "y"), 0).context() == "Q?\nA. x\nB. y\nAnswer:"


def test_files_load_alike_from_jsonl_json_and_parquet(tmp_path):
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    (tmp_path / "q.json").write_text(json.dumps(ROWS))
    pq.write_table(pa.Table.from_pylist([{**r, "subject": "college_biology"} for r in ROWS]),
                   tmp_path / "test-00000-of-00001.parquet")
    jsonl = load_multiple_choice(tmp_path / "q.jsonl", subject="biology")
    assert jsonl == load_multiple_choice(tmp_path / "q.json", subject="biology")
    assert [(q.question, list(q.choices), q.answer) for q in jsonl] == [
        (r["question"], r["choices"], r["answer"]) for r in ROWS]
    parquet = load_multiple_choice(tmp_path / "test-00000-of-00001.parquet")
    assert [q.subject for q in parquet] == ["college biology"] * len(ROWS)  # MMLU's subject, underscores as spaces
    assert [q.answer for q in parquet] == [q.answer for q in jsonl]
    (tmp_path / "letters.jsonl").write_text(json.dumps({"question": "Q?", "choices": ["x", "y"], "answer": "b"}))
    assert load_multiple_choice(tmp_path / "letters.jsonl")[0].answer == 1


@pytest.mark.parametrize("row, says", [
    ({"question": "Q?", "choices": ["x", "y"]}, "missing field 'answer'"),
    ({"question": "Q?", "choices": ["x", "y"], "answer": 2}, "'answer' is 2 but there are 2 choices"),
    ({"question": "Q?", "choices": ["x"], "answer": 0}, "at least two answer texts"),
    ({"question": None, "choices": ["x", "y"], "answer": 0}, "'question' is null"),
    ({"question": "Q?", "choices": ["x", "y"], "answer": "yes"}, "index of the right choice"),
])
def test_a_bad_row_is_one_line_naming_file_and_line(tmp_path, row, says):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError) as err:
        load_multiple_choice(path)
    assert says in str(err.value) and f"{path}, line 2" in str(err.value) and "\n" not in str(err.value)


def test_unknown_extension_is_refused(tmp_path):
    with pytest.raises(DataError, match="unknown extension '.csv'"):
        load_multiple_choice(tmp_path / "q.csv")


@pytest.fixture(scope="module")
def questions():
    return [MultipleChoice(r["question"], tuple(r["choices"]), r["answer"], "general knowledge") for r in ROWS]


@pytest.fixture(scope="module")
def trained(questions):
    """A tiny LM taught the right letter of the first four questions (so its accuracy is neither 0 nor chance)."""
    model, formatter = tiny_lm([q.context() + " A B C D" for q in questions])
    taught = [formatter.encode_text(q.context() + " " + "ABCD"[q.answer]) for q in questions[:4]]
    fit(model, collate(taught, formatter.pad_token_id), steps=40)
    return model.eval(), formatter


def test_continuation_tokens_are_cut_from_the_whole_string(trained):
    _, formatter = trained
    tok = formatter.tokenizer
    enc = encode_continuation(tok, "Answer: ", "B", max_length=96)  # the space moves to the continuation
    whole = tok("Answer: B", add_special_tokens=False)["input_ids"]
    assert enc.input_ids == whole
    assert enc.prompt_length == len(tok("Answer:", add_special_tokens=False)["input_ids"])
    short = encode_continuation(tok, "Which organ pumps blood? Answer:", " B", max_length=4)
    assert short.input_ids == tok("Which organ pumps blood? Answer: B", add_special_tokens=False)["input_ids"][-4:]


def naive_correct(model, tokenizer, question) -> float:
    """Each choice alone: the whole string's tokens, the continuation's after the context's, summed log-probs."""
    context = question.context()
    lls = []
    for letter in "ABCD"[: len(question.choices)]:
        whole = tokenizer(context + " " + letter, add_special_tokens=False)["input_ids"]
        n = len(tokenizer(context, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].double(), dim=-1)
        lls.append(sum(logp[t - 1, whole[t]].item() for t in range(n, len(whole))))
    return 1.0 if lls.index(max(lls)) == question.answer else 0.0


def test_accuracy_equals_a_naive_recomputation(trained, questions, tmp_path):
    model, formatter = trained
    task = CorpusTask("mcq", forget=["x"], retain=["y"], forget_mcq=questions[:4], retain_mcq=questions)
    result = evaluate_muse_suite(model, formatter, task, metrics=["forget_mcq_accuracy", "retain_mcq_accuracy"],
                                 progress=False, store_root=tmp_path)
    naive = [naive_correct(model, formatter.tokenizer, q) for q in questions]
    assert result.per_example["retain_mcq_accuracy"] == naive
    assert result.per_example["forget_mcq_accuracy"] == naive[:4]
    assert result.aggregates["retain_mcq_accuracy"] == pytest.approx(sum(naive) / len(naive), abs=1e-12)
    assert 0 < sum(naive) < len(naive)  # the check compares right and wrong choices, not a constant
    again = evaluate_muse_suite(model, formatter, task, metrics=["retain_mcq_accuracy"], progress=False,
                                store_root=tmp_path)  # read from the store
    assert again.per_example["retain_mcq_accuracy"] == naive


def test_a_task_without_questions_has_no_accuracy(trained):
    model, formatter = trained
    result = evaluate_muse_suite(model, formatter, CorpusTask("none", forget=["x"], retain=["y"]),
                                 metrics=["forget_mcq_accuracy"], progress=False)
    assert result.aggregates["forget_mcq_accuracy"] is None
