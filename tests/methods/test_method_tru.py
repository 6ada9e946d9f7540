"""TRU (research/methods.md §11): L = L_target(reasoning + refusal | question) + GradDiff, against a recomputation one
unpadded example at a time on explicitly written (prompt + target) sequences; targets keyed by the forget index."""

import pytest

import naive_reference as naive
from unlearnkit.methods import get_method

CharTokenizer = naive.CharTokenizer
REASONING, REFUSAL = "why", "no!"
TARGET = CharTokenizer()(f"{REASONING} {REFUSAL}")["input_ids"] + [2]


def target_examples(rows):
    return [naive.sequence(naive.FORGET[i][0], TARGET) for i in rows]


def naive_target(model, rows, reduction):
    if reduction == "token":
        return naive.mean_nll(model, target_examples(rows))
    return -sum(naive.sequence_logprob(model, ids, labels) for ids, labels in target_examples(rows)) / len(rows)


def prepared(**params):
    method = get_method("tru", reasoning=REASONING, refusal=REFUSAL, **params).use_tokenizer(CharTokenizer())
    method.prepare(naive.tiny_llama(), [naive.forget_batch([0, 1]), naive.forget_batch([2])])
    return method


@pytest.mark.parametrize("reduction", ["token", "sequence"])
def test_tru_loss_matches_target_plus_graddiff(reduction):
    model = naive.perturbed_copy(naive.tiny_llama(), scale=0.2)
    method = prepared(target_reduction=reduction, target_weight=0.7, forget_weight=0.5, retain_weight=2.0)
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    want_target = naive_target(model, [0, 1, 2], reduction)
    want = (0.7 * want_target - 0.5 * naive.mean_nll(model, naive.forget_examples())
            + 2.0 * naive.mean_nll(model, naive.retain_examples()))
    assert logs["target_loss"] == pytest.approx(want_target, rel=1e-5)
    assert loss.item() == pytest.approx(want, rel=1e-5)


def test_tru_targets_follow_the_forget_index():
    model = naive.perturbed_copy(naive.tiny_llama(), scale=0.2)
    method = prepared(retain_loss=None)
    batch = naive.forget_batch([2, 0])
    _, logs = method.loss(model, batch, None)
    assert logs["target_loss"] == pytest.approx(naive_target(model, [2, 0], "token"), rel=1e-5)
    rows = method.target_batch(batch["index"], "cpu")
    assert rows["input_ids"][0, : len(naive.FORGET[2][0]) + len(TARGET)].tolist() == naive.FORGET[2][0] + TARGET


def test_tru_without_a_tokenizer_or_before_prepare_is_refused():
    method = get_method("tru")
    with pytest.raises(ValueError, match="use_tokenizer"):
        method.prepare(naive.tiny_llama(), [naive.forget_batch()])
    with pytest.raises(RuntimeError, match="prepare"):
        get_method("tru").loss(naive.tiny_llama(), naive.forget_batch(), naive.retain_batch())
