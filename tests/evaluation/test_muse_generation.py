"""The MUSE suite's generations (unlearnkit.evaluation.suites.muse_generation) go through the engine's one generation
path: with continuous batching (and without ``model.generate``) they equal a naive one-example-at-a-time computation
(unbatched ``model.generate`` plus ``rouge_score``), the ``model.generate`` path gives the same values, and a stored
evaluation resumes where it was killed."""

import pytest
from muse_fixtures import naive_rouge_l_f1, task, tokenizer  # noqa: F401  (fixtures)
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from unlearnkit.data.corpus import CorpusTask
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics.muse import knowmem_prompt
from unlearnkit.evaluation.scoring import generation
from unlearnkit.evaluation.scoring.greedy import supports_continuous_batching
from unlearnkit.evaluation.scoring.store import ResultStore
from unlearnkit.evaluation.suites.muse_generation import evaluate_muse_generations, verbmem

PREFIX, VERB_NEW, KNOW_NEW = 16, 24, 24
STOPS = ("\n\n", "\nQuestion", "Question:")


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


def naive_generate(model, tokenizer, prompt_ids: list[int], max_new_tokens: int) -> str:
    """MUSE's loop body: one prompt, greedy, decode every new token without special tokens."""
    output = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0, len(prompt_ids):], skip_special_tokens=True)


def without_generate(model, monkeypatch, evaluate):
    """``evaluate()`` with ``model.generate`` forbidden: the continuous-batching path must do all the decoding."""
    assert supports_continuous_batching(model) is not None

    def no_generate(*args, **kwargs):
        raise AssertionError("model.generate ran although the model decodes with continuous batching")

    with monkeypatch.context() as patch:
        patch.setattr(model, "generate", no_generate)
        return evaluate()


def test_verbmem_equals_naive_one_at_a_time(model, tokenizer, task, monkeypatch):
    texts = task.chunked(tokenizer, 48).forget + ["A short text."]  # a chunk too short for a prefix: skipped
    result = without_generate(model, monkeypatch, lambda: evaluate_muse_generations(
        model, tokenizer, CorpusTask("t", texts, []), metrics=["verbmem_f"], prefix_tokens=PREFIX,
        verbmem_max_new_tokens=VERB_NEW, batch_size=3))
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
    assert skipped >= 1 and result["skipped"]["verbmem_f"] == skipped
    assert len(got) == len(expected) >= 5
    assert sum(f1 > 0 for _, _, f1 in expected) >= 2  # the comparison is not all zeros
    for row, (reference, generation, f1) in zip(got, expected):
        assert row["reference"] == reference
        assert row["generation"] == generation.strip()
        assert row["rougeL_f1"] == pytest.approx(f1, abs=1e-6)
    mean = sum(f1 for _, _, f1 in expected) / len(expected)
    assert result["aggregates"]["verbmem_f"] == pytest.approx(mean, abs=1e-6)


def test_knowmem_equals_naive_one_at_a_time(model, tokenizer, task, monkeypatch):
    result = without_generate(model, monkeypatch, lambda: evaluate_muse_generations(
        model, tokenizer, task, metrics=["knowmem_f", "knowmem_r"], knowmem_max_new_tokens=KNOW_NEW, batch_size=5))
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
    assert n_cut >= 3  # some generations ran into a stop string, so the cut after decoding is exercised
    assert result["settings"]["knowmem_shots_forget"] == 2


def test_the_generate_path_gives_the_same_values(model, tokenizer, task, monkeypatch):
    """A model that cannot decode with continuous batching runs ``model.generate`` batch by batch: same results."""
    small = CorpusTask("t", task.chunked(tokenizer, 48).forget[:7], [], forget_qa=task.forget_qa[:7],
                       forget_qa_icl=task.forget_qa_icl, retain_qa=task.retain_qa[:7],
                       retain_qa_icl=task.retain_qa_icl)
    settings = {"prefix_tokens": PREFIX, "verbmem_max_new_tokens": VERB_NEW, "knowmem_max_new_tokens": KNOW_NEW,
                "batch_size": 3}
    continuous = evaluate_muse_generations(model, tokenizer, small, **settings)
    calls = []
    original = model.generate

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(generation, "supports_continuous_batching", lambda m: None)
        patch.setattr(model, "generate", counted)
        batched = evaluate_muse_generations(model, tokenizer, small, **settings)
    chunks = len(continuous["per_example"]["verbmem_f"])
    assert chunks >= 4 and len(calls) == -(-chunks // 3) + 3 + 3  # batches of 3: the chunks, 7 + 7 questions
    assert batched == continuous


def test_a_stored_evaluation_resumes_and_a_repeated_one_only_reads(model, tokenizer, task, tmp_path, monkeypatch):
    settings = {"metrics": ["knowmem_r"], "knowmem_max_new_tokens": KNOW_NEW, "batch_size": 2}  # units of 8
    reference = evaluate_muse_generations(model, tokenizer, task, **settings)
    store = ResultStore(tmp_path, "fingerprint", "muse_generations", {"version": 2})
    decoded = []  # the prompts each continuous-batching call decodes
    original_greedy, original_append = generation.greedy_continuous, ResultStore.append

    def counted_greedy(model, cache_name, inputs, *args, **kwargs):
        decoded.append(len(inputs))
        return original_greedy(model, cache_name, inputs, *args, **kwargs)

    def append_then_die(self, values):
        original_append(self, values)
        raise KeyboardInterrupt("simulated kill after the first unit")

    monkeypatch.setattr(generation, "greedy_continuous", counted_greedy)
    with monkeypatch.context() as patch:
        patch.setattr(ResultStore, "append", append_then_die)
        with pytest.raises(KeyboardInterrupt):
            evaluate_muse_generations(model, tokenizer, task, store=store, **settings)
    assert decoded == [8]
    resumed = evaluate_muse_generations(model, tokenizer, task, store=store, **settings)
    assert resumed == reference
    assert decoded[1:] == [8] * 5  # 48 questions: the 5 units left, the stored one read
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        repeated = evaluate_muse_generations(model, tokenizer, task, store=store, **settings)
    finally:
        hook.remove()
    assert calls == [] and repeated == reference


def test_verbmem_skips_short_texts_and_fails_when_all_are_short(model, tokenizer):
    long_text = "Born in Velmora, Ardenia, the writer wrote many books about the sea and the city. " * 3
    examples, skipped = verbmem(model, tokenizer, ["too short", long_text], prefix_tokens=8, max_new_tokens=4)
    assert (len(examples), skipped) == (1, 1)
    with pytest.raises(UnlearnkitError, match="prefix_tokens=8"):
        verbmem(model, tokenizer, ["too short", "also short"], prefix_tokens=8)


def test_empty_splits_give_none_and_unknown_metric_fails(model, tokenizer):
    result = evaluate_muse_generations(model, tokenizer, CorpusTask("t", [], []), verbmem_max_new_tokens=4)
    assert result["aggregates"] == {"verbmem_f": None, "knowmem_f": None, "knowmem_r": None}
    assert result["skipped"] == {"verbmem_f": 0}
    with pytest.raises(UnlearnkitError, match="unknown MUSE metric 'privleak'"):
        evaluate_muse_generations(model, tokenizer, CorpusTask("t", [], []), metrics=["privleak"])
