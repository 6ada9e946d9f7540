"""Each shared prefix runs once (unlearnkit.evaluation.scoring.prompt_sharing): a prompt for all its answers, and the tokens
several answers start with; the scores are the same.

Reference for "the same": the plain path of score_pairs, which runs every (prompt + answer) sequence whole and is
itself tested against one-pair-at-a-time forward passes (test_tofu_suite.py). The two paths are the same
computation in exact arithmetic; in float32 the BLAS may round a small matrix shape differently, so they agree to
float32 rounding (TOL), and the argmax predictions exactly.
"""

import math
import os

import pytest
import torch
from tiny_lm import assert_same_scores, tiny_lm
from torch import nn

from unlearnkit.evaluation.scoring.pooling import FeatureSpec
from unlearnkit.evaluation.scoring.prompt_sharing import (
    batch_levels,
    cache_argument,
    forward_shared_prompts,
    prompt_of,
    shared_prompt_batches,
)
from unlearnkit.evaluation.scoring.passes import score_pairs
from unlearnkit.evaluation.scoring.shared_prefix import shared_prefix

QUESTIONS = {
    "Who wrote The Glass Orchard?": ["Mira Solen wrote The Glass Orchard in 1998.", "Tom Hale wrote it.",
                                     "Mira Solen wrote The Glass Orchard in 2004.", "It was written by Leo Park.",
                                     "It was written by Ana Ruiz in 2001, in a small flat by the sea."],
    "Where was Mira Solen born?": ["She was born in Oslo.", "She was born in Lima.",
                                   "Her birthplace is Cairo, a large city."],
    "What genre does Mira Solen write, and why?": ["Quiet literary fiction about orchards.", "Horror.",
                                                   "She writes crime thrillers because her father was a detective."],
    "Who is Ivo Brand?": ["A novelist.", "Ivo Brand won the Harbor Prize in 2010 for Salt Roads."],
    "What is the capital of France?": ["Paris"],
}
TOL = 1e-5
PAIRS = [(q, a) for q, answers in QUESTIONS.items() for a in answers]


@pytest.fixture(scope="module")
def setup():
    model, formatter = tiny_lm([q + " " + a for q, a in PAIRS])
    model.set_attn_implementation("eager")
    return model.eval(), formatter


def count_tokens(model):
    """A list that receives the number of input tokens (padding included) of every forward call of ``model``."""
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["input_ids"].numel()),
                                             with_kwargs=True)
    return seen, handle


def test_shared_prompts_give_the_full_sequences_scores(setup):
    model, formatter = setup
    spec = FeatureSpec(layer=1, pool="answer")
    tokens, handle = count_tokens(model)
    try:
        shared = score_pairs(model, formatter, PAIRS, batch_size=3, moments=True, features=spec)
        shared_tokens = sum(tokens)
        tokens.clear()
        full = score_pairs(model, formatter, PAIRS, batch_size=3, moments=True, features=spec, share_prompts=False)
        full_tokens = sum(tokens)
    finally:
        handle.remove()
    assert set(shared) == set(full) == set(PAIRS)
    for pair in PAIRS:
        assert shared[pair].token_logprobs == pytest.approx(full[pair].token_logprobs, abs=TOL)
        assert shared[pair].argmax_match == full[pair].argmax_match
        assert shared[pair].token_mu == pytest.approx(full[pair].token_mu, abs=TOL)
        assert shared[pair].token_sigma == pytest.approx(full[pair].token_sigma, abs=TOL)
        assert shared[pair].features == pytest.approx(full[pair].features, abs=TOL)
        assert shared[pair].ends_with_eos
    assert shared_tokens < full_tokens  # the prompts ran fewer times


def test_batches_keep_each_question_together_longest_first(setup):
    _, formatter = setup
    encoded = {pair: formatter.encode(*pair) for pair in PAIRS}
    batches = shared_prompt_batches(encoded, batch_size=3)
    order = [key for batch in batches for key in batch]
    assert sorted(order) == sorted(PAIRS) and all(0 < len(batch) <= 3 for batch in batches)
    questions = [q for q, _ in order]
    for q in QUESTIONS:  # a question's answers are consecutive, longest first
        first = questions.index(q)
        block = order[first : first + len(QUESTIONS[q])]
        assert [key[0] for key in block] == [q] * len(QUESTIONS[q])
        lengths = [len(encoded[key].input_ids) for key in block]
        assert lengths == sorted(lengths, reverse=True)
    assert shared_prompt_batches(encoded, batch_size=3) == batches  # deterministic (every process deals the same)


def plan_cost(batch, encoded, call_cost, opening=0):
    """The cheapest cost of running one batch in levels, worked out independently of the module: a dynamic
    programme over every cut position up to the shortest row less one token (not only where answers part), with
    the distinct prefixes of each length counted as a set; each level and the last pass cost a call, each token 1;
    a level, and the last pass after levels, run at least 4 positions (MIN_PASS_POSITIONS).
    """
    seqs = [tuple(encoded[key].input_ids) for key in batch]
    longest = max(len(seq) for seq in seqs)
    best = {opening: 0.0}  # best[c]: the cheapest levels ending at cut c
    for cut in range(opening + 1, min(len(seq) for seq in seqs)):
        distinct = len({seq[:cut] for seq in seqs})
        best[cut] = min((cost + distinct * (cut - previous) + call_cost for previous, cost in best.items()
                         if cut - previous >= 4), default=math.inf)
    return min(cost + len(seqs) * (longest - cut) for cut, cost in best.items()
               if cut == opening or longest - cut >= 4) + call_cost


def every_cut(rows, size):
    """Every way to cut ``rows`` into consecutive batches of at most ``size``."""
    if not rows:
        yield []
    for first in range(1, min(size, len(rows)) + 1):
        for rest in every_cut(rows[first:], size):
            yield [rows[:first], *rest]


@pytest.mark.parametrize("call_cost", [0.0, 8.0, 1e6])
def test_batches_are_cut_where_they_run_the_fewest_tokens(setup, call_cost):
    _, formatter = setup
    encoded = {pair: formatter.encode(*pair) for pair in PAIRS}
    batches = shared_prompt_batches(encoded, batch_size=3, call_cost=call_cost)
    order = [key for batch in batches for key in batch]
    costs = {}

    def cost(cut):
        return sum(costs.setdefault(tuple(b), plan_cost(b, encoded, call_cost)) for b in cut)

    fewest = min(cost(cut) for cut in every_cut(order, 3))
    assert cost(batches) == fewest  # brute force over every cut
    full = [order[i : i + 3] for i in range(0, len(order), 3)]
    if call_cost == 0.0:
        assert cost(full) > fewest  # less padding than batches filled to the batch size
    if call_cost >= 1e6:  # calls dominate: as few batches as the batch size allows, whatever their prompts, no levels
        assert len(batches) == len(full)
        assert any(len({len(prompt_of(encoded[k])) for k in batch}) > 1 for batch in batches)
        assert all(batch_levels([encoded[k] for k in batch], call_cost=call_cost) == () for batch in batches)


@pytest.mark.parametrize("call_cost", [0.0, 3.0, 8.0])
def test_a_batch_runs_in_its_cheapest_levels(setup, call_cost):
    """The cuts a batch runs at cost what the independent dynamic programme over every cut position finds."""
    _, formatter = setup
    encoded = {pair: formatter.encode(*pair) for pair in PAIRS}
    for size in (2, 3, 5, 16):
        for start in range(0, len(PAIRS), size):
            batch = PAIRS[start : start + size]
            cuts = batch_levels([encoded[k] for k in batch], call_cost=call_cost)
            seqs = [tuple(encoded[k].input_ids) for k in batch]
            bounds = [0, *cuts]
            assert all(cut - previous >= 4 for previous, cut in zip(bounds, bounds[1:]))
            assert not cuts or max(map(len, seqs)) - cuts[-1] >= 4
            cost = sum(len({seq[:cut] for seq in seqs}) * (cut - previous) + call_cost
                       for previous, cut in zip(bounds, bounds[1:]))
            cost += len(seqs) * (max(map(len, seqs)) - bounds[-1]) + call_cost
            assert cost == plan_cost(batch, encoded, call_cost)


def test_answers_that_start_alike_run_their_common_start_once_with_the_full_sequences_scores(setup, monkeypatch):
    model, formatter = setup
    monkeypatch.setattr("unlearnkit.evaluation.scoring.passes.call_cost", lambda device: 3.0)
    encoded = {pair: formatter.encode(*pair) for pair in PAIRS}
    tokens, handle = count_tokens(model)
    try:
        shared = score_pairs(model, formatter, PAIRS, batch_size=16, moments=True)
    finally:
        handle.remove()
    assert_same_scores(shared, score_pairs(model, formatter, PAIRS, batch_size=16, moments=True, share_prompts=False),
                       PAIRS, TOL)
    # the opening all prompts share runs first; then the batches, each in its cheapest levels
    prompts = [formatter.prompt_ids(q) for q in QUESTIONS]
    opening = len(os.path.commonprefix(prompts))
    assert tokens[0] == opening > 0
    batches = shared_prompt_batches(encoded, 16, 3.0, opening)
    assert sum(tokens[1:]) + 3.0 * (len(tokens) - 1) == sum(plan_cost(b, encoded, 3.0, opening) for b in batches)
    # some level runs into the answers: "Mira Solen wrote The Glass Orchard in" once for two answers
    assert any(max(batch_levels([encoded[k] for k in b], opening, 3.0), default=0)
               > max(encoded[k].prompt_length for k in b) for b in batches)


@pytest.mark.parametrize("with_opening", [False, True])
def test_one_batch_of_every_prompt_length_in_many_levels_gives_a_full_passs_logits(setup, with_opening):
    """Free calls put a level at most points where answers part, in prompts and answers alike; the logits that
    predict each answer are those of the pair's full forward pass, whichever level or pass they come from."""
    model, formatter = setup
    examples = [formatter.encode(*pair) for pair in PAIRS]
    cache_name = cache_argument(model)
    with torch.inference_mode():
        opening = shared_prefix(model, cache_name, [prompt_of(enc) for enc in examples], torch.device("cpu"))
        opening = opening if with_opening else None
        cuts = batch_levels(examples, len(opening or ()), call_cost=0.0)
        steps, _, _ = forward_shared_prompts(model, examples, formatter.pad_token_id, torch.device("cpu"), False,
                                             cache_name, opening, call_cost=0.0)
        shortest_prompt = min(enc.prompt_length for enc in examples)
        assert len(cuts) >= 3 and cuts[0] <= shortest_prompt  # levels within the prompts, and within some answers:
        assert any(cut > enc.prompt_length for cut in cuts for enc in examples)
        for enc, step in zip(examples, steps):
            full = model(input_ids=torch.tensor([enc.input_ids])).logits[0, enc.prompt_length - 1 : -1]
            assert step.shape == full.shape
            assert torch.allclose(step, full, atol=TOL, rtol=0)


class WithoutCache(nn.Module):
    """A causal LM behind a forward that takes no KV cache (as some custom models do)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states)


def test_a_model_without_a_cache_runs_full_sequences(setup):
    model, formatter = setup
    assert cache_argument(model) in ("cache", "past_key_values")
    wrapped = WithoutCache(model)
    assert cache_argument(wrapped) is None
    tokens, handle = count_tokens(model)
    try:
        scores = score_pairs(wrapped, formatter, PAIRS, batch_size=3)
    finally:
        handle.remove()
    assert sum(tokens) == sum(
        max(len(formatter.encode(*p).input_ids) for p in batch) * len(batch)
        for batch in [sorted(PAIRS, key=lambda p: len(formatter.encode(*p).input_ids), reverse=True)[i : i + 3]
                      for i in range(0, len(PAIRS), 3)]
    )
    reference = score_pairs(model, formatter, PAIRS, batch_size=3)
    for pair in PAIRS:
        assert scores[pair].token_logprobs == pytest.approx(reference[pair].token_logprobs, abs=TOL)


def test_features_over_every_token_need_the_full_sequences(setup):
    model, formatter = setup
    spec = FeatureSpec(layer=2, pool="all")
    scores = score_pairs(model, formatter, PAIRS[:4], batch_size=4, features=spec)
    for q, a in PAIRS[:4]:
        enc = formatter.encode(q, a)
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([enc.input_ids]), output_hidden_states=True).hidden_states[2][0]
        assert scores[(q, a)].features == pytest.approx(hidden.mean(dim=0).tolist(), abs=1e-5)


def test_a_hybrid_model_whose_cache_holds_convolution_states_runs_full_sequences(setup):
    """LFM2 keeps convolution states in its cache, which cannot be copied to answer rows: no sharing, and its
    scores are those of each pair run alone."""
    from transformers import Lfm2Config, Lfm2ForCausalLM

    _, formatter = setup
    config = Lfm2Config(vocab_size=len(formatter.tokenizer), hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                        layer_types=["conv", "full_attention"])
    torch.manual_seed(0)
    model = Lfm2ForCausalLM(config).eval()
    assert cache_argument(model) is None
    scores = score_pairs(model, formatter, PAIRS, batch_size=3)
    for q, a in PAIRS[:4]:
        enc = formatter.encode(q, a)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0]
        alone = torch.log_softmax(logits[enc.prompt_length - 1 : -1], dim=-1)
        alone = alone.gather(-1, torch.tensor(enc.input_ids[enc.prompt_length :])[:, None]).squeeze(-1)
        assert scores[(q, a)].token_logprobs == pytest.approx(alone.tolist(), abs=TOL)
