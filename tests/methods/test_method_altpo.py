"""AltPO: the loss against a hand-written DPO (alternate ≻ true answer), its step-0 value and gradient direction,
and the alternates sampled by the untouched model from the reference's prompt (molereddy/Alternate-Preference-
Optimization ``generate.py``: question + answer + instruction + "Alternate Answer :", cut at "Question:"/"Q:")."""

import math

import pytest
import torch

import naive_reference as naive
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import get_method
from unlearnkit.methods.altpo import INSTRUCTION, cut_alternate
from unlearnkit.models.load import load_causal_lm, save_model
from unlearnkit.models.tiny import build_tiny

ALTERNATES = {0: [26, 27, 2], 1: [28, 2], 2: [29, 3, 4, 5, 2]}  # hand-made alternate answers (EOS = 2)


def alternate_examples():
    return [naive.sequence(q, ALTERNATES[i]) for i, (q, _, _) in enumerate(naive.FORGET)]


def naive_altpo(model, reference, beta):
    """-(2/beta) log sigmoid(beta [(lp(alt) - lp_ref(alt)) - (lp(ans) - lp_ref(ans))]), averaged over examples."""
    terms = []
    for (ids, labels), (alt_ids, alt_labels) in zip(naive.forget_examples(), alternate_examples()):
        answer = naive.sequence_logprob(model, ids, labels) - naive.sequence_logprob(reference, ids, labels)
        alternate = (naive.sequence_logprob(model, alt_ids, alt_labels)
                     - naive.sequence_logprob(reference, alt_ids, alt_labels))
        terms.append(-(2 / beta) * naive.log_sigmoid(beta * (alternate - answer)))
    return sum(terms) / len(terms)


def prepared(method, reference):
    method.use_alternates(reference, [naive.forget_batch([0, 1]), naive.forget_batch([2])], ALTERNATES,
                          naive.PAD)
    return method


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_altpo_forget_loss_matches_formula(beta):
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = prepared(get_method("altpo", beta=beta, retain_loss=None), reference)
    loss, logs = method.loss(model, naive.forget_batch([2, 0, 1]), None)
    assert loss.item() == pytest.approx(naive_altpo(model, reference, beta), abs=1e-5)
    assert "retain_loss" not in logs


def test_altpo_with_retain_nll_and_weights():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = prepared(get_method("altpo", forget_weight=0.5, retain_weight=2.0), reference)
    loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
    want = 0.5 * naive_altpo(model, reference, 0.1) + 2.0 * naive.mean_nll(model, naive.retain_examples())
    assert loss.item() == pytest.approx(want, abs=1e-5)


def test_alternate_batch_is_the_question_with_the_alternate_answer():
    method = prepared(get_method("altpo"), naive.tiny_llama())
    batch = method.alternate_batch(naive.forget_batch([1, 2]))
    want = naive.collate([alternate_examples()[1], alternate_examples()[2]])
    for key in ("input_ids", "labels", "attention_mask"):
        assert batch[key].tolist() == want[key].tolist()


def test_step_zero_value_and_the_gradient_prefers_the_alternate():
    model = naive.tiny_llama()
    method = prepared(get_method("altpo", beta=0.1, retain_loss=None), model)
    loss, _ = method.loss(model, naive.forget_batch(), None)
    assert loss.item() == pytest.approx(2 / 0.1 * math.log(2), abs=1e-4)  # theta = theta_ref
    loss.backward()
    before = [naive.sequence_logprob(model, *e) for e in naive.forget_examples() + alternate_examples()]
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.05 * p.grad
    after = [naive.sequence_logprob(model, *e) for e in naive.forget_examples() + alternate_examples()]
    assert sum(after[:3]) < sum(before[:3])  # the true answers lose probability
    assert sum(after[3:]) > sum(before[3:])  # the alternates gain it


def test_cut_alternate_stops_at_the_next_question():
    assert cut_alternate(" Born in Paris in 1950.\nQuestion: Where") == "Born in Paris in 1950."
    assert cut_alternate("He wrote novels. Q: and") == "He wrote novels."
    assert cut_alternate("  plain  ") == "plain"


@pytest.fixture(scope="module")
def tiny_with_tokenizer(tmp_path_factory):
    texts = ["Question: Who is Ada Vell?\nAnswer: Ada Vell is a poet born in Lima.", INSTRUCTION,
             "Alternate Answer : Question: Q:"] * 4
    model, tokenizer = build_tiny(texts, vocab_size=300, hidden_size=32, layers=2, heads=2)
    folder = tmp_path_factory.mktemp("tiny")
    save_model(model, tokenizer, folder)
    return load_causal_lm(folder)


def tokenized_forget(tokenizer):
    prompt = tokenizer("Question: Who is Ada Vell?\nAnswer: ", add_special_tokens=False)["input_ids"]
    answer = tokenizer("Ada Vell is a poet born in Lima.", add_special_tokens=False)["input_ids"] + [2]
    batch = naive.collate([naive.sequence(prompt, answer)] * 2)
    batch["index"] = torch.tensor([0, 1])
    return batch, prompt


def test_prepare_samples_alternates_from_the_untouched_model(tiny_with_tokenizer):
    model, tokenizer = tiny_with_tokenizer
    batch, prompt = tokenized_forget(tokenizer)
    torch.manual_seed(0)
    method = get_method("altpo", max_new_tokens=12)
    method.prepare(model, [batch])
    torch.manual_seed(0)
    again = get_method("altpo", max_new_tokens=12)
    again.prepare(model, [batch])
    assert method._alternates == again._alternates  # the same seed draws the same alternates
    for index in (0, 1):
        row = method._alternates[index]
        assert row[: len(prompt)] == prompt and row[-1] == tokenizer.eos_token_id
        text = tokenizer.decode(row[len(prompt):], skip_special_tokens=True)
        assert "Question:" not in text and "Q:" not in text and text == text.strip()
    # pi_ref of the alternates is the untouched model's, one unpadded example at a time
    for index in (0, 1):
        row = method._alternates[index]
        labels = [-100] * len(prompt) + row[len(prompt):]
        want = naive.sequence_logprob(model, row, labels)
        assert method._reference_alternate[index].item() == pytest.approx(want, abs=1e-4)


def test_a_model_without_its_tokenizer_is_refused():
    with pytest.raises(UnlearnkitError, match="tokenizer"):
        get_method("altpo").prepare(naive.tiny_llama(), [naive.forget_batch()])


def test_loss_before_prepare_is_refused():
    with pytest.raises(RuntimeError, match="prepare"):
        get_method("altpo").loss(naive.tiny_llama(), naive.forget_batch(), naive.retain_batch())
