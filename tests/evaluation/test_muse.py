"""MUSE VerbMem / KnowMem: batched generation equals a naive one-example-at-a-time computation; the pieces
(stop strings, prompt format, ROUGE-L F1) against hand-worked values."""

import pytest
import torch
from rouge_score import rouge_scorer
from tokenizers import processors
from transformers import LlamaConfig, LlamaForCausalLM

from unlearnkit.data.corpus import CorpusTask
from unlearnkit.data.synthetic_corpus import synthetic_corpus_task
from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics.muse import (
    _leading_special_ids,
    cut_at_stop_strings,
    evaluate_muse,
    knowmem_prompt,
    rouge_l_f1,
    verbmem,
)
from unlearnkit.models.tiny import train_tokenizer

PREFIX, VERB_NEW, KNOW_NEW = 16, 24, 24
STOPS = ("\n\n", "\nQuestion", "Question:")


@pytest.fixture(scope="module")
def task():
    return synthetic_corpus_task(n_people=8, forget_people=2, holdout_people=1, n_shots=2)


@pytest.fixture(scope="module")
def tokenizer(task):
    return train_tokenizer(task.texts(), vocab_size=300)


@pytest.fixture(scope="module")
def model(task, tokenizer):
    """A tiny Llama trained for a few steps on the biographies and few-shot QA, so that its greedy generations
    vary from prompt to prompt, overlap the references in part and sometimes contain the stop strings."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    texts = task.forget + task.retain + [knowmem_prompt(q.question, task.forget_qa_icl) + q.answer + "\n\n"
                                         for q in task.forget_qa[::2] + task.retain_qa[::3]]
    encoded = [tokenizer(t)["input_ids"][:96] for t in texts]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(60):
        batch = [encoded[(step * 8 + i) % len(encoded)] for i in range(8)]
        width = max(map(len, batch))
        ids = torch.tensor([b + [0] * (width - len(b)) for b in batch])
        labels = torch.tensor([b + [-100] * (width - len(b)) for b in batch])
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.double().eval()  # float64: batched and single-row greedy decoding cannot tie-break apart


def naive_rouge_l_f1(reference: str, generation: str) -> float:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(reference, generation)["rougeL"].fmeasure


def naive_generate(model, tokenizer, prompt_ids: list[int], max_new_tokens: int) -> str:
    """MUSE's loop body: one prompt, greedy, decode every new token without special tokens."""
    output = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0, len(prompt_ids):], skip_special_tokens=True)


def test_rouge_l_f1_by_hand():
    # LCS("the cat sat on the mat", "the cat on a mat") = "the cat on mat" = 4; P = 4/5, R = 4/6, F1 = 8/11
    assert rouge_l_f1("the cat sat on the mat", "the cat on a mat") == pytest.approx(8 / 11, abs=1e-12)
    assert rouge_l_f1("The Cat!", "the\ncat") == 1.0  # lowercased, punctuation and whitespace ignored
    assert rouge_l_f1("running", "run") == 0.0  # no stemming, as MUSE's RougeEvalLogger
    assert rouge_l_f1("anything", "") == 0.0


def test_cut_at_stop_strings_on_hand_made_strings():
    assert cut_at_stop_strings("Velmora.\n\nQuestion: next?") == "Velmora."
    assert cut_at_stop_strings("Velmora.\nQuestion: next?") == "Velmora."
    assert cut_at_stop_strings("Velmora. Question: next?") == "Velmora. "
    assert cut_at_stop_strings("a\nb\n\nc") == "a\nb"
    assert cut_at_stop_strings("\n\nVelmora") == ""
    assert cut_at_stop_strings("Question about it") == "Question about it"  # "Question" without ':' stays
    assert cut_at_stop_strings("no stop here\n") == "no stop here\n"


def test_knowmem_prompt_exact_format():
    shots = [QAExample("Q one?", "A one."), QAExample("Q two?", "A two.")]
    assert knowmem_prompt("Q three?", shots) == (
        "Question: Q one?\nAnswer: A one.\n\nQuestion: Q two?\nAnswer: A two.\n\nQuestion: Q three?\nAnswer: ")
    assert knowmem_prompt("Q?") == "Question: Q?\nAnswer: "


def test_verbmem_equals_naive_one_at_a_time(model, tokenizer, task):
    texts = task.chunked(tokenizer, 48).forget
    result = evaluate_muse(model, tokenizer, CorpusTask("t", texts, []), metrics=["verbmem_f"],
                           prefix_tokens=PREFIX, verbmem_max_new_tokens=VERB_NEW, batch_size=3)
    expected, skipped = [], 0
    for text in texts:
        ids = tokenizer(text)["input_ids"]  # this tokenizer adds no special tokens
        if len(ids) <= PREFIX:
            skipped += 1
            continue
        generation = naive_generate(model, tokenizer, ids[:PREFIX], VERB_NEW)
        reference = tokenizer.decode(ids[PREFIX : PREFIX + VERB_NEW], skip_special_tokens=True)
        expected.append((reference, generation, naive_rouge_l_f1(reference, generation)))
    got = result["per_example"]["verbmem_f"]
    assert skipped >= 1 and result["skipped"]["verbmem_f"] == skipped  # the short last chunk of a biography
    assert len(got) == len(expected) >= 5
    assert sum(f1 > 0 for _, _, f1 in expected) >= 2  # the comparison is not all zeros
    for row, (reference, generation, f1) in zip(got, expected):
        assert row["reference"] == reference
        assert row["generation"] == generation.strip()
        assert row["rougeL_f1"] == pytest.approx(f1, abs=1e-6)
    mean = sum(f1 for _, _, f1 in expected) / len(expected)
    assert result["aggregates"]["verbmem_f"] == pytest.approx(mean, abs=1e-6)


def test_knowmem_equals_naive_one_at_a_time(model, tokenizer, task):
    result = evaluate_muse(model, tokenizer, task, metrics=["knowmem_f", "knowmem_r"],
                           knowmem_max_new_tokens=KNOW_NEW, batch_size=5)
    n_cut = 0
    for metric, qa, shots in (("knowmem_f", task.forget_qa, task.forget_qa_icl),
                              ("knowmem_r", task.retain_qa, task.retain_qa_icl)):
        demonstrations = "".join(f"Question: {s.question}\nAnswer: {s.answer}\n\n" for s in shots)
        expected = []
        for ex in qa:
            prompt = demonstrations + f"Question: {ex.question}\nAnswer: "
            raw = naive_generate(model, tokenizer, tokenizer(prompt)["input_ids"], KNOW_NEW)
            answer = raw
            for stop in STOPS:
                answer = answer.split(stop)[0]
            n_cut += answer != raw
            expected.append((prompt, answer, naive_rouge_l_f1(ex.answer, answer)))
        got = result["per_example"][metric]
        assert len(got) == len(qa)
        for row, (prompt, answer, f1) in zip(got, expected):
            assert row["prompt"] == prompt
            assert row["generation"] == answer.strip()
            assert row["rougeL_f1"] == pytest.approx(f1, abs=1e-6)
        mean = sum(f1 for _, _, f1 in expected) / len(expected)
        assert result["aggregates"][metric] == pytest.approx(mean, abs=1e-6)
    assert n_cut >= 3  # some generations ran into a stop string, so the early stop and the cut are exercised
    assert result["settings"]["knowmem_shots_forget"] == 2


def test_prompt_keeps_the_tokenizers_leading_special_tokens(tokenizer):
    text = "Velmora is the capital of Ardenia."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert _leading_special_ids(tokenizer, text, ids) == []
    with_bos = train_tokenizer([text], vocab_size=300)
    with_bos._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", with_bos.bos_token_id)])
    ids = with_bos(text, add_special_tokens=False)["input_ids"]
    assert with_bos(text)["input_ids"] == [with_bos.bos_token_id] + ids
    assert _leading_special_ids(with_bos, text, ids) == [with_bos.bos_token_id]


def test_verbmem_skips_short_texts_and_fails_when_all_are_short(model, tokenizer):
    long_text = "Born in Velmora, Ardenia, the writer wrote many books about the sea and the city. " * 3
    examples, skipped = verbmem(model, tokenizer, ["too short", long_text], prefix_tokens=8, max_new_tokens=4)
    assert (len(examples), skipped) == (1, 1)
    with pytest.raises(UnlearnkitError, match="prefix_tokens=8"):
        verbmem(model, tokenizer, ["too short", "also short"], prefix_tokens=8)


def test_empty_splits_give_none_and_unknown_metric_fails(model, tokenizer):
    result = evaluate_muse(model, tokenizer, CorpusTask("t", [], []), verbmem_max_new_tokens=4)
    assert result["aggregates"] == {"verbmem_f": None, "knowmem_f": None, "knowmem_r": None}
    assert result["skipped"] == {"verbmem_f": 0}
    with pytest.raises(UnlearnkitError, match="unknown MUSE metric 'privleak'"):
        evaluate_muse(model, tokenizer, CorpusTask("t", [], []), metrics=["privleak"])
