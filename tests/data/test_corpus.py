"""Raw-text tasks: chunking, file loading and its errors, and the synthetic biographies."""

import json
import random
import re

import pytest

from unlearnkit.data.corpus import CorpusTask, chunk_texts, load_corpus_task, load_texts
from unlearnkit.data.synthetic import _make_people, make_synthetic_task
from unlearnkit.data.synthetic_corpus import synthetic_corpus_task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.models.tiny import train_tokenizer

DOC = ("Quenna Havelock was born in Rimevale, a city of Dorvik, in 1957. Her father was a veterinarian and her "
       "mother a blacksmith.\n\nShe wrote romance novels; 'The Sunken Harbor' is the best known of them.  ")


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([DOC, "Velmora is the capital of Ardenia."], vocab_size=300)


def no_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("max_tokens", [1, 7, 16, 1000])
def test_chunks_are_consecutive_token_windows(tokenizer, max_tokens):
    ids = tokenizer(DOC, add_special_tokens=False)["input_ids"]
    chunks = chunk_texts([DOC, "Velmora is the capital of Ardenia."], tokenizer, max_tokens)
    windows = [ids[i : i + max_tokens] for i in range(0, len(ids), max_tokens)]
    expected = [tokenizer.decode(w).strip() for w in windows if tokenizer.decode(w).strip()]
    assert chunks[: len(expected)] == expected  # ASCII text: a window decodes to exactly the text it spans
    assert all(chunk and chunk == chunk.strip() for chunk in chunks)
    assert no_space("".join(chunks[: len(expected)])) == no_space(DOC)
    for chunk in chunks:  # about max_tokens tokens (a BPE may merge differently at the cut)
        assert len(tokenizer(chunk)["input_ids"]) <= max_tokens + 2


def test_chunks_never_split_a_character():
    text = "Zoë and Renée ate crème brûlée in Velmora. " * 3
    tok = train_tokenizer(["plain ascii words only"], vocab_size=300)  # accents become several byte tokens
    chunks = chunk_texts([text], tok, 3)
    assert "\ufffd" not in "".join(chunks)
    assert no_space("".join(chunks)) == no_space(text)


def test_chunking_drops_whitespace_only_text_and_rejects_bad_window(tokenizer):
    assert chunk_texts(["   \n\n  "], tokenizer, 4) == []
    with pytest.raises(UnlearnkitError, match="max_tokens must be at least 1"):
        chunk_texts([DOC], tokenizer, 0)


def test_chunked_task_cuts_every_corpus(tokenizer):
    task = CorpusTask("t", forget=[DOC], retain=[DOC, DOC], holdout=[DOC])
    chunked = task.chunked(tokenizer, 8)
    n = len(chunk_texts([DOC], tokenizer, 8))
    assert n > 1 and (len(chunked.forget), len(chunked.retain), len(chunked.holdout)) == (n, 2 * n, n)
    assert task.forget == [DOC]  # the original is unchanged


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_txt_file_is_one_document(tmp_path):
    assert load_texts(write(tmp_path / "book.txt", DOC)) == [DOC]


def test_jsonl_and_json_array(tmp_path):
    jsonl = write(tmp_path / "docs.jsonl", '{"text": "one", "id": 1}\n\n{"text": "two"}\n')
    assert load_texts(jsonl) == ["one", "two"]
    array = write(tmp_path / "docs.json", json.dumps([{"text": "one"}, {"text": "two"}]))
    assert load_texts(array) == ["one", "two"]


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", " \n\n ", r"empty.txt: the file is empty"),
    ("a.jsonl", '{"text": "ok"}\n\n{"text": "  "}\n', r"a.jsonl, line 3: empty 'text'"),
    ("b.jsonl", '{"text": "ok"}\n{"body": "x"}\n', r"b.jsonl, line 2: missing field 'text'"),
    ("c.jsonl", '{"text": 5}\n', r"c.jsonl, line 1: 'text' must be a string"),
    ("h.jsonl", '{"text": "ok"}\n{"text": null}\n', r"h.jsonl, line 2: 'text' is null: write the document as text"),
    ("i.json", '[{"text": "ok"}, {"text": null}]', r"i.json, line 2: 'text' is null"),
    ("d.jsonl", '["text"]\n', r"d.jsonl, line 1: expected a JSON object"),
    ("e.jsonl", '{"text": "ok"}\n{"text": \n', r"e.jsonl, line 2, column 10: unreadable JSON"),
    ("f.jsonl", "\n\n", r"f.jsonl: no documents"),
    ("g.csv", "text\nx\n", r"g.csv: unknown extension '.csv'"),
])
def test_bad_files_name_file_line_and_fix(tmp_path, name, content, message):
    with pytest.raises(UnlearnkitError, match=message):
        load_texts(write(tmp_path / name, content))


def test_missing_file(tmp_path):
    with pytest.raises(UnlearnkitError, match="file not found"):
        load_texts(tmp_path / "nope.txt")


def test_load_corpus_task_with_qa_and_holdout(tmp_path):
    forget = write(tmp_path / "forget.txt", DOC)
    retain = write(tmp_path / "retain.jsonl", '{"text": "Velmora is the capital of Ardenia."}\n')
    qa = write(tmp_path / "qa.jsonl", '{"question": "Where was Quenna born?", "answer": "Rimevale"}\n')
    task = load_corpus_task(forget, retain, holdout=retain, forget_qa=qa, forget_qa_icl=qa)
    assert task.name == "corpus-forget"
    assert (task.forget, task.holdout) == ([DOC], ["Velmora is the capital of Ardenia."])
    assert [ex.answer for ex in task.forget_qa] == ["Rimevale"] and task.retain_qa == []
    assert task.require_holdout() == task.holdout


def test_privleak_without_holdout_is_a_clear_error(tmp_path):
    task = load_corpus_task(write(tmp_path / "f.txt", DOC), write(tmp_path / "r.txt", DOC))
    with pytest.raises(UnlearnkitError, match="no holdout texts, which PrivLeak needs: pass a holdout file"):
        task.require_holdout()


# ---------------------------------------------------------------------------------------------------------------
# Synthetic biographies
# ---------------------------------------------------------------------------------------------------------------
def test_synthetic_corpus_is_deterministic():
    assert synthetic_corpus_task(seed=3) == synthetic_corpus_task(seed=3)
    assert synthetic_corpus_task(seed=3).forget != synthetic_corpus_task(seed=4).forget


def test_each_biography_states_its_persons_facts():
    # the generator's people, drawn independently of the QA text the corpus module reads them from
    people = _make_people(40, random.Random(0))
    task = synthetic_corpus_task(seed=0)
    splits = {"retain": people[:32], "holdout": people[32:36], "forget": people[36:]}
    for split, split_people in splits.items():
        biographies = getattr(task, split)
        assert len(biographies) == len(split_people)
        for bio, person in zip(biographies, split_people):
            for key, value in person.facts().items():
                assert value.lower() in bio.lower(), (split, key, value, bio)
            assert len(re.findall(r"[.!?](\s|$)", bio)) >= 5  # several sentences


def test_synthetic_corpus_qa_come_from_the_same_task():
    qa_task = make_synthetic_task(seed=1)
    task = synthetic_corpus_task(seed=1, n_shots=3)
    assert task.forget_qa == qa_task.forget
    assert task.forget_qa_icl == task.retain_qa_icl == qa_task.retain[:3]
    assert task.retain_qa == [ex for ex in qa_task.eval_retain if ex not in qa_task.retain[:3]]
    assert not set(ex.question for ex in task.forget_qa) & set(ex.question for ex in task.retain_qa)
    with pytest.raises(UnlearnkitError, match="n_shots=11"):
        synthetic_corpus_task(n_shots=11)


def test_synthetic_corpus_multiple_choice_asks_each_persons_facts():
    task = synthetic_corpus_task(n_people=8, forget_people=2, holdout_people=1)
    assert task == synthetic_corpus_task(n_people=8, forget_people=2, holdout_people=1)  # deterministic
    assert len(task.forget_mcq) == 2 * 2 and len(task.retain_mcq) == 2 * 5
    for question, bio in zip(task.forget_mcq, [b for b in task.forget for _ in range(2)]):
        right = question.choices[question.answer]
        assert right in bio  # the biography states the right answer ...
        assert len(set(question.choices)) == len(question.choices) == 4
        assert all(choice not in bio for choice in question.choices if choice != right)  # ... and no wrong one
