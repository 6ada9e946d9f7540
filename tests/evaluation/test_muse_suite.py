"""The MUSE suite: raw-text scoring equals a naive one-text-at-a-time computation, the MIA AUCs equal a hand count
of forget/holdout pairs from naively computed statistics, privleak against the model itself is 0, and the whole
suite runs on the synthetic corpus."""

import json
import math
import zlib
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import processors
from transformers import LlamaConfig, LlamaForCausalLM

from unlearnkit.data.corpus import chunk_texts
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.synthetic_corpus import synthetic_corpus_task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics.intervals import aggregate_intervals
from unlearnkit.evaluation.suites.muse import MUSE_SUITE_METRICS, default_chunk_tokens, evaluate_muse_suite
from unlearnkit.evaluation.scoring.store import ResultStore
from unlearnkit.evaluation.scoring.passes import score_texts
from unlearnkit.models.tiny import train_tokenizer

CHUNK = 24
GENERATION = {"prefix_tokens": 8, "verbmem_max_new_tokens": 8, "knowmem_max_new_tokens": 6}


@pytest.fixture(scope="module")
def task():
    return synthetic_corpus_task(n_people=8, forget_people=2, holdout_people=2, n_shots=2)


@pytest.fixture(scope="module")
def tokenizer(task):
    return train_tokenizer(task.texts(), vocab_size=300)


@pytest.fixture(scope="module")
def bos_tokenizer(task):
    tok = train_tokenizer(task.texts(), vocab_size=300)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    return tok


@pytest.fixture(scope="module")
def model(tokenizer):
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def naive_scores(model, tokenizer, text, max_length):
    """One text alone: log p(x_t | x_<t) for t = 1..T-1 by F.cross_entropy, and the next-token moments in float64."""
    ids = torch.tensor(tokenizer(text)["input_ids"][:max_length])
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0, :-1].double()
    logprobs = -F.cross_entropy(logits, ids[1:], reduction="none")
    logp = torch.log_softmax(logits, dim=-1)
    mu = (logp.exp() * logp).sum(-1)
    sigma = ((logp.exp() * logp.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
    return logprobs.tolist(), mu.tolist(), sigma.tolist(), (logits.argmax(-1) == ids[1:]).tolist()


def naive_statistics(model, tokenizer, text, max_length):
    """loss, zlib, Min-K% and Min-K%++ (k = 0.4) of one text, straight from the formulas of metrics.md §2."""
    logprobs, mu, sigma, _ = naive_scores(model, tokenizer, text, max_length)
    values = np.array(logprobs)
    count = max(1, int(0.4 * len(values)))
    loss = -values.mean()
    z = (values - np.array(mu)) / np.sqrt(np.maximum(np.array(sigma) ** 2, 1e-6))
    return {"loss": loss, "zlib": loss / len(zlib.compress(text.encode("utf-8"))),
            "min_k": -np.sort(values)[:count].mean(), "min_k_plus_plus": -np.sort(z)[:count].mean()}


def pairwise_auc(forget, holdout):
    """P(forget statistic < holdout statistic) + ½ P(tie), counted over every forget/holdout pair."""
    wins = sum((f < h) + 0.5 * (f == h) for f in forget for h in holdout)
    return wins / (len(forget) * len(holdout))


@pytest.mark.parametrize("with_bos", [False, True])
def test_score_texts_equals_naive_per_text(task, tokenizer, bos_tokenizer, model, with_bos):
    tok = bos_tokenizer if with_bos else tokenizer
    formatter = QAFormatter(tok, max_length=40)
    # mixed lengths: a long text truncated to max_length, whole biographies, short pieces; one duplicate
    texts = [task.forget[0], task.holdout[0][:60], "Readers first met", task.retain[1][:150], task.forget[0][:25],
             task.holdout[0][:60]]
    scores = score_texts(model, formatter, texts, batch_size=3, moments=True)
    assert set(scores) == set(texts)
    assert len(tok(texts[0])["input_ids"]) > 40  # the truncation is exercised
    for text in texts:
        logprobs, mu, sigma, matches = naive_scores(model, tok, text, 40)
        score = scores[text]
        assert score.n_tokens == len(logprobs) == min(40, len(tok(text)["input_ids"])) - 1
        np.testing.assert_allclose(score.token_logprobs, logprobs, atol=1e-5, rtol=0)
        np.testing.assert_allclose(score.token_mu, mu, atol=1e-5, rtol=0)
        np.testing.assert_allclose(score.token_sigma, sigma, atol=1e-5, rtol=0)
        assert score.argmax_match == matches
        assert score.ends_with_eos is False  # no EOS is appended to raw text


def test_score_texts_store_resumes_without_running_the_model(tmp_path, tokenizer, model, monkeypatch):
    formatter = QAFormatter(tokenizer, max_length=32)
    texts = ["The debut of Ana was a book.", "Again and again the stories circle back.", "Born in a city."]
    store = ResultStore(tmp_path, "fingerprint", "text_scores", {"moments": False})
    first = score_texts(model, formatter, texts, batch_size=2, store=store)

    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran although every text was stored")

    monkeypatch.setattr(model, "forward", no_forward)
    second = score_texts(model, formatter, texts, batch_size=2, store=store)
    assert second == first


def test_score_texts_rejects_unscorable_texts(tokenizer, model):
    formatter = QAFormatter(tokenizer, max_length=32)
    single = next(t for t in ("a", "B", ".") if len(tokenizer(t)["input_ids"]) == 1)
    with pytest.raises(UnlearnkitError, match="fewer than 2 tokens"):
        score_texts(model, formatter, [single])
    with pytest.raises(UnlearnkitError, match="raw text strings"):
        score_texts(model, formatter, [("question", "answer")])


def test_mia_aucs_equal_a_pairwise_count_of_naive_statistics(task, tokenizer, model):
    formatter = QAFormatter(tokenizer, max_length=64)
    mia_metrics = ["mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus"]
    result = evaluate_muse_suite(model, formatter, task, metrics=mia_metrics, chunk_tokens=CHUNK, batch_size=4,
                                 progress=False)
    forget = chunk_texts(task.forget, tokenizer, CHUNK)
    holdout = chunk_texts(task.holdout, tokenizer, CHUNK)
    assert len(forget) >= 4 and len(holdout) >= 4
    naive = {"forget": [naive_statistics(model, tokenizer, t, 64) for t in forget],
             "holdout": [naive_statistics(model, tokenizer, t, 64) for t in holdout]}
    statistic = {"mia_loss": "loss", "mia_zlib": "zlib", "mia_min_k": "min_k", "mia_min_k_plus_plus": "min_k_plus_plus"}
    assert set(result.aggregates) == set(mia_metrics)
    for metric, name in statistic.items():
        f = [s[name] for s in naive["forget"]]
        h = [s[name] for s in naive["holdout"]]
        np.testing.assert_allclose(result.per_example[f"{metric}_forget"], f, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(result.per_example[f"{metric}_holdout"], h, rtol=1e-5, atol=1e-7)
        assert result.aggregates[metric] == pytest.approx(pairwise_auc(f, h), abs=1e-12)
    # the AUCs are not all the same number (the test could not tell the statistics apart otherwise)
    assert len({round(result.aggregates[m], 9) for m in mia_metrics}) > 1


def test_privleak_of_the_retain_model_against_itself_is_zero(task, tokenizer, model):
    formatter = QAFormatter(tokenizer, max_length=64)
    alone = evaluate_muse_suite(model, formatter, task, metrics=["privleak"], chunk_tokens=CHUNK, progress=False)
    assert alone.aggregates["privleak"] is None  # no reference given
    reference = alone.reference_stats()
    assert reference == {"mia_min_k_auc": alone.aggregates["mia_min_k"]}
    itself = evaluate_muse_suite(model, formatter, task, reference=reference, metrics=["privleak"],
                                 chunk_tokens=CHUNK, progress=False)
    assert itself.aggregates["privleak"] == pytest.approx(0.0, abs=1e-9)
    # against a chance-level retain model (AUC 0.5): ((1 - AUC) - 0.5) / 0.5 * 100, worked out by hand
    auc = itself.aggregates["mia_min_k"]
    chance = evaluate_muse_suite(model, formatter, task, reference={"mia_min_k_auc": 0.5}, metrics=["privleak"],
                                 chunk_tokens=CHUNK, progress=False)
    assert chance.aggregates["privleak"] == pytest.approx(((1 - auc) - 0.5) / 0.5 * 100, rel=1e-8)


def test_whole_suite_on_the_synthetic_corpus(task, tokenizer, model, tmp_path):
    formatter = QAFormatter(tokenizer, max_length=64)
    reference = {"mia_min_k_auc": 0.6}
    result = evaluate_muse_suite(model, formatter, task, reference=reference, chunk_tokens=CHUNK, batch_size=8,
                                 progress=False, store_root=tmp_path, **GENERATION)
    assert set(result.aggregates) == set(MUSE_SUITE_METRICS)
    assert all(value is not None and math.isfinite(value) for value in result.aggregates.values())
    n_chunks = len(chunk_texts(task.forget, tokenizer, CHUNK))
    assert len(result.per_example["verbmem_f"]) == len(result.generations["verbmem_f"]) == n_chunks
    assert len(result.per_example["knowmem_f"]) == len(result.generations["knowmem_f"]) == len(task.forget_qa)
    assert len(result.per_example["knowmem_r"]) == len(result.generations["knowmem_r"]) == len(task.retain_qa)
    for name in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert result.aggregates[name] == pytest.approx(np.mean(result.per_example[name]))
        assert 0 <= result.aggregates[name] <= 1
    for metric in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus"):
        assert len(result.per_example[f"{metric}_forget"]) == n_chunks
        assert 0 <= result.aggregates[metric] <= 1
    assert result.aggregates["privleak"] == pytest.approx(
        ((1 - result.aggregates["mia_min_k"]) - 0.4) / 0.4 * 100, rel=1e-8)  # privleak's eps = 1e-10
    assert result.reference_stats()["mia_min_k_auc"] == result.aggregates["mia_min_k"]
    json.dumps(result.to_dict())  # a plain-JSON result, as the reports and the cache need
    intervals = aggregate_intervals(result.aggregates, result.per_example, reference, n_resamples=50)
    assert intervals["mia_min_k"] is not None and intervals["privleak"] is not None
    # a second evaluation reads the stored chunk scores and gives the same membership numbers
    again = evaluate_muse_suite(model, formatter, task, reference=reference, metrics=["mia_min_k_plus_plus"],
                                chunk_tokens=CHUNK, progress=False, store_root=tmp_path)
    assert again.aggregates["mia_min_k_plus_plus"] == result.aggregates["mia_min_k_plus_plus"]
    # ... and the whole suite again, generations included, reads everything without running the model
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        repeated = evaluate_muse_suite(model, formatter, task, reference=reference, chunk_tokens=CHUNK, batch_size=8,
                                       progress=False, store_root=tmp_path, **GENERATION)
    finally:
        hook.remove()
    assert calls == [] and repeated.to_dict() == result.to_dict()


def test_missing_holdout_is_a_clear_error_only_when_needed(task, tokenizer, model):
    formatter = QAFormatter(tokenizer, max_length=64)
    no_holdout = replace(task, holdout=[])
    for metrics in (["privleak"], ["mia_loss"], None):
        with pytest.raises(UnlearnkitError, match="no holdout texts"):
            evaluate_muse_suite(model, formatter, no_holdout, metrics=metrics, chunk_tokens=CHUNK, progress=False)
    result = evaluate_muse_suite(model, formatter, replace(no_holdout, retain_qa=no_holdout.retain_qa[:3]),
                                 metrics=["knowmem_r"], progress=False, **GENERATION)
    assert set(result.aggregates) == {"knowmem_r"} and result.aggregates["knowmem_r"] is not None


def test_chunk_length_and_metric_names_are_checked(task, tokenizer, bos_tokenizer, model):
    assert default_chunk_tokens(QAFormatter(tokenizer, max_length=64)) == 64
    assert default_chunk_tokens(QAFormatter(bos_tokenizer, max_length=64)) == 63  # room for the BOS
    formatter = QAFormatter(tokenizer, max_length=64)
    with pytest.raises(UnlearnkitError, match="chunk_tokens=65"):
        evaluate_muse_suite(model, formatter, task, metrics=["mia_loss"], chunk_tokens=65, progress=False)
    with pytest.raises(UnlearnkitError, match="unknown MUSE metric"):
        evaluate_muse_suite(model, formatter, task, metrics=["forget_quality"], progress=False)
