"""Continuous-batching greedy decoding (unlearnkit.evaluation.scoring.greedy) against one question at a time.

Reference: plain greedy decoding written out here, one question alone, no padding and no cache: each step runs the
whole sequence and appends the argmax of the last position's logits, until an end token or the token budget.
"""

import pytest
import torch
from tiny_lm import fit, tiny_lm
from transformers import MistralConfig, MistralForCausalLM

from unlearnkit.data.formatting import collate
from unlearnkit.evaluation.scoring.greedy import greedy_continuous, supports_continuous_batching
from unlearnkit.evaluation.scoring.generation import _generate_batch, generate_answers

PAIRS = [
    ("Who wrote The Glass Orchard?", "Mira Solen wrote The Glass Orchard in 1998."),
    ("Where was Mira Solen born?", "Oslo."),
    ("What genre does Mira Solen write?", "Quiet literary fiction about orchards and the people who tend them."),
    ("Who wrote Salt Roads?", "Ivo Brand."),
    ("What prize did Ivo Brand win?", "Ivo Brand won the Harbor Prize in 2010 for Salt Roads."),
    ("Who wrote Hamlet?", "William Shakespeare"),
    ("What is the capital of France?", "Paris"),
    ("How many legs does a spider have?", "Eight"),
    ("Who wrote Dust Lanterns?", "Pia Moor wrote Dust Lanterns in 2005, in a flat by the river."),
]


@pytest.fixture(scope="module")
def setup():
    model, formatter = tiny_lm([q + " " + a for q, a in PAIRS])
    fit(model, collate([formatter.encode(q, a) for q, a in PAIRS[:7]], formatter.pad_token_id), steps=80)
    return model.eval(), formatter


def greedy_alone(model, ids, budget, stops):
    new = []
    with torch.no_grad():
        while len(new) < budget and not (new and new[-1] in stops):
            new.append(int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax()))
    return new


def forward_calls(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a, k: calls.append(tuple(k["input_ids"].shape)),
                                             with_kwargs=True)
    return calls, handle


def test_continuous_batching_equals_one_question_at_a_time(setup):
    model, formatter = setup
    inputs = [formatter.prompt_ids(q) for q, _ in PAIRS]
    budgets = [12, 3, 12, 12, 7, 12, 1, 12, 12]  # a budget of 1 ends a row in its prefill
    stops = [formatter.eos_token_id]
    calls, handle = forward_calls(model)
    try:
        with torch.inference_mode():
            out = greedy_continuous(model, "cache", inputs, budgets, stops, formatter.pad_token_id, batch_size=3,
                                    device=torch.device("cpu"))
    finally:
        handle.remove()
    expected = [greedy_alone(model, ids, budget, stops) for ids, budget in zip(inputs, budgets)]
    assert out == expected
    lengths = [len(e) for e in expected]
    assert any(e[-1] in stops for e in expected) and any(e[-1] not in stops for e in expected)
    assert min(lengths) < max(lengths)
    # questions joined the running batch as rows ended: more prefills than the 3 of three fixed batches
    prefills = [rows for rows, width in calls if width > 1]
    assert sum(prefills) == len(PAIRS) and len(prefills) > 3


def test_continuous_batching_runs_fewer_steps_than_batch_by_batch(setup):
    model, formatter = setup
    inputs = [formatter.prompt_ids(q) for q, _ in PAIRS]
    budgets = [30] * len(PAIRS)  # answers of 5 to 30 tokens
    stops = [formatter.eos_token_id]
    calls, handle = forward_calls(model)
    try:
        with torch.inference_mode():
            continuous = greedy_continuous(model, "cache", inputs, budgets, stops, formatter.pad_token_id,
                                           batch_size=3, device=torch.device("cpu"))
            continuous_steps, calls[:] = sum(width == 1 for _, width in calls), []
            batched = [row for at in range(0, len(inputs), 3)
                       for row in _generate_batch(model, inputs[at : at + 3], budgets[at : at + 3], stops,
                                                  formatter.pad_token_id, torch.device("cpu"))]
    finally:
        handle.remove()
    # model.generate pads rows that ended: cut at the first end token to compare
    trimmed = [row[: next((i + 1 for i, t in enumerate(row) if t in stops), len(row))] for row in batched]
    assert continuous == trimmed
    assert continuous_steps < sum(width == 1 for _, width in calls)  # fewer decoding steps


def test_generate_answers_decodes_continuously_where_it_can(setup):
    model, formatter = setup
    questions = [q for q, _ in PAIRS]
    assert supports_continuous_batching(model) == "cache"
    answers = generate_answers(model, formatter, questions, max_new_tokens=12, batch_size=3)
    stops = [formatter.eos_token_id]
    expected = [formatter.tokenizer.decode([t for t in greedy_alone(model, formatter.prompt_ids(q), 12, stops)
                                            if t not in stops], skip_special_tokens=True).strip()
                for q in questions]
    assert answers == expected


def test_a_generation_config_that_changes_the_logits_decodes_with_generate(setup):
    model, formatter = setup
    model.generation_config.repetition_penalty = 2.0
    try:
        assert supports_continuous_batching(model) is None  # generate applies the penalty
        questions = [q for q, _ in PAIRS]
        penalised = generate_answers(model, formatter, questions, max_new_tokens=30, batch_size=3)
    finally:
        model.generation_config.repetition_penalty = None
    assert supports_continuous_batching(model) == "cache"
    assert penalised != generate_answers(model, formatter, questions, max_new_tokens=30, batch_size=3)


def test_sliding_window_models_decode_with_generate():
    config = MistralConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=2, sliding_window=8)
    assert supports_continuous_batching(MistralForCausalLM(config)) is None
    config.sliding_window = None
    assert supports_continuous_batching(MistralForCausalLM(config)) == "cache"
