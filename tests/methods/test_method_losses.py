"""The shared log-prob / NLL / KL helpers against one-example-at-a-time computations."""

import pytest
import torch

import naive_reference as naive
from unlearnkit.methods.losses import answer_lengths, mean_nll, retain_kl, sequence_nll, token_logprobs


@pytest.fixture(scope="module")
def model():
    return naive.tiny_llama()


def test_sequence_nll_sums_answer_tokens_per_example(model):
    batch = naive.forget_batch()
    with torch.no_grad():
        got = sequence_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
    want = [-naive.sequence_logprob(model, ids, labels) for ids, labels in naive.forget_examples()]
    assert got.shape == (3,)
    assert got.tolist() == pytest.approx(want, abs=1e-5)


def test_token_logprobs_are_zero_at_prompt_and_padding(model):
    batch = naive.retain_batch()
    with torch.no_grad():
        logprobs = token_logprobs(model(input_ids=batch["input_ids"]).logits, batch["labels"])
    ignored = batch["labels"][:, 1:] == -100
    assert (logprobs[ignored] == 0).all()
    assert (logprobs[~ignored] < 0).all()


def test_mean_nll_is_the_token_mean_over_the_whole_batch(model):
    batch = naive.forget_batch()
    with torch.no_grad():
        got = mean_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
        hf = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert got.item() == pytest.approx(naive.mean_nll(model, naive.forget_examples()), abs=1e-5)
    assert got.item() == pytest.approx(hf.item(), abs=1e-6)  # the Hugging Face outputs.loss


def test_answer_lengths_count_answer_tokens():
    assert answer_lengths(naive.forget_batch()["labels"]).tolist() == [4, 3, 2]


def test_retain_kl_averages_over_every_position_including_padding():
    model, reference = naive.perturbed_copy(naive.tiny_llama(), scale=0.2), naive.tiny_llama()
    batch = naive.retain_batch()
    with torch.no_grad():
        got = retain_kl(model, reference, batch)
        assert retain_kl(reference, reference, batch).item() == pytest.approx(0.0, abs=1e-6)
    assert got.item() > 1e-3
    assert got.item() == pytest.approx(naive.retain_kl(model, reference, batch), rel=1e-4, abs=1e-6)
