"""The GCG suffix attack: prompts with the suffix ids in place, the objective against a naive one-example-at-a-time
computation, the one-hot gradient against the chain rule and finite differences, the monotone search, and the
evaluations with a suffix and with paraphrased questions."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

from unlearnkit.attacks.evaluation import retarget
from unlearnkit.attacks.suffix import (ascii_token_ids, candidate_losses, default_allowed_tokens,
                                       evaluate_paraphrased, evaluate_with_suffix, optimize_suffix,
                                       paraphrased_examples, sample_candidates, suffix_gradient, suffix_loss)
from unlearnkit.attacks.suffix_prompt import SuffixFormatter, prompt_parts
from unlearnkit.config import EvalConfig
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import Task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.models.tiny import train_tokenizer

from conftest import FORGET, RETAIN, evaluator, llama, make_task

SUFFIX = [40, 41, 42, 43, 44]


@pytest.fixture(scope="module")
def setup():
    task = make_task()
    tokenizer = train_tokenizer(task.texts(), vocab_size=300)
    formatter = QAFormatter(tokenizer, max_length=128, template="plain")
    return tokenizer, formatter, llama(len(tokenizer)).eval()


def ids(tokenizer, text, special=False):
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def naive_prompt(tokenizer, question, suffix):
    """The plain prompt built by hand: "Question: {q}" tokens, the suffix ids, "\\nAnswer: " tokens."""
    return ids(tokenizer, f"Question: {question}", special=True) + list(suffix) + ids(tokenizer, "\nAnswer: ")


def naive_nll(model, prompt, answer):
    """Mean answer NLL of one un-padded sequence: −(1/|a|) Σ_t log softmax(logits_{t−1})[a_t]."""
    sequence = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = model(input_ids=sequence).logits[0].double()
    total = 0.0
    for k, token in enumerate(answer):
        position = len(prompt) + k - 1
        total -= float(torch.log_softmax(logits[position], dim=-1)[token])
    return total / len(answer)


def naive_loss(model, tokenizer, examples, suffix):
    answers = [ids(tokenizer, ex.answer) + [tokenizer.eos_token_id] for ex in examples]
    values = [naive_nll(model, naive_prompt(tokenizer, ex.question, suffix), a) for ex, a in zip(examples, answers)]
    return sum(values) / len(values), values


# --- prompts ---------------------------------------------------------------------------------------------------


def test_plain_prompt_has_the_suffix_ids_right_after_the_question(setup):
    tokenizer, formatter, _ = setup
    suffixed = SuffixFormatter(formatter, SUFFIX)
    for ex in FORGET:
        assert suffixed.prompt_ids(ex.question) == naive_prompt(tokenizer, ex.question, SUFFIX)
        encoded = suffixed.encode(ex.question, ex.answer)
        assert encoded.prompt_length == len(naive_prompt(tokenizer, ex.question, SUFFIX))
        assert encoded.answer_ids == ids(tokenizer, ex.answer) + [tokenizer.eos_token_id]
        # no suffix: exactly the formatter's own prompt
        assert SuffixFormatter(formatter, []).prompt_ids(ex.question) == formatter.prompt_ids(ex.question)


CHAT_TEMPLATE = ("{% for m in messages %}<|user|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def chat_formatter(template, extra_texts=()):
    tokenizer = train_tokenizer(make_task().texts() + list(extra_texts), vocab_size=300)
    tokenizer.chat_template = template
    return tokenizer, QAFormatter(tokenizer, max_length=128, template="auto")


def test_chat_prompt_has_the_suffix_ids_at_the_end_of_the_user_message():
    tokenizer, formatter = chat_formatter(CHAT_TEMPLATE)
    assert formatter.use_chat
    suffixed = SuffixFormatter(formatter, SUFFIX)
    for ex in FORGET:
        expected = ids(tokenizer, f"<|user|>\n{ex.question}") + SUFFIX + ids(tokenizer, "\n<|assistant|>\n")
        assert suffixed.prompt_ids(ex.question) == expected
        assert SuffixFormatter(formatter, []).prompt_ids(ex.question) == formatter.prompt_ids(ex.question)


def test_a_token_across_the_cut_falls_back_to_tokenizing_the_two_parts_separately():
    # "?" and "<" are one byte-level pre-token; trained on "?<<", the tokenizer merges across the question's end
    tokenizer, formatter = chat_formatter("{% for m in messages %}[{{ m['content'] }}<<{% endfor %}", ["?<<"] * 50)
    for ex in FORGET:
        assert "?<<" in tokenizer.convert_ids_to_tokens(formatter.prompt_ids(ex.question))
        expected = ids(tokenizer, f"[{ex.question}") + SUFFIX + ids(tokenizer, "<<")
        assert SuffixFormatter(formatter, SUFFIX).prompt_ids(ex.question) == expected
        parts = prompt_parts(formatter, ex.question)
        assert parts.with_suffix(SUFFIX) == expected


def test_a_template_that_does_not_copy_the_message_once_is_refused():
    _, formatter = chat_formatter("{% for m in messages %}{{ m['content'] }} / {{ m['content'] }}{% endfor %}")
    with pytest.raises(UnlearnkitError, match="template"):
        prompt_parts(formatter, "who?")


# --- the objective ----------------------------------------------------------------------------------------------


def test_candidate_losses_batched_equal_one_example_at_a_time(setup):
    tokenizer, formatter, model = setup
    generator = torch.Generator().manual_seed(3)
    candidates = torch.randint(4, len(tokenizer), (6, 5), generator=generator)
    expected = [naive_loss(model, tokenizer, FORGET, c.tolist())[0] for c in candidates]
    for batch_size in (1, 5, 64):
        got = candidate_losses(model, formatter, FORGET, candidates, batch_size=batch_size)
        assert got.tolist() == pytest.approx(expected, rel=1e-5)
    assert suffix_loss(model, formatter, FORGET, candidates[2].tolist()) == pytest.approx(expected[2], rel=1e-5)


def test_gradient_equals_the_chain_rule_through_the_embeddings(setup):
    tokenizer, formatter, model = setup
    weight = model.get_input_embeddings().weight
    suffix_embeds = weight[SUFFIX].detach().clone().requires_grad_(True)
    losses = []
    for ex in FORGET:  # one example at a time, un-padded
        before = ids(tokenizer, f"Question: {ex.question}", special=True)
        after = ids(tokenizer, "\nAnswer: ")
        answer = ids(tokenizer, ex.answer) + [tokenizer.eos_token_id]
        embed = model.get_input_embeddings()
        inputs = torch.cat([embed(torch.tensor(before)), suffix_embeds, embed(torch.tensor(after + answer))])[None]
        logits = model(inputs_embeds=inputs).logits[0]
        start = len(before) + len(SUFFIX) + len(after)
        logprobs = torch.log_softmax(logits[start - 1: start - 1 + len(answer)], dim=-1)
        losses.append(-logprobs[torch.arange(len(answer)), torch.tensor(answer)].mean())
    (embed_grad,) = torch.autograd.grad(torch.stack(losses).mean(), suffix_embeds)
    expected = embed_grad @ weight.detach().T  # ∂L/∂x_{i,v} = W_v · ∂L/∂e_i
    got = suffix_gradient(model, formatter, FORGET, SUFFIX, batch_size=3)  # two gradient passes
    assert got.shape == (len(SUFFIX), weight.shape[0])
    torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-6)


def test_gradient_matches_finite_differences_on_one_position(setup):
    tokenizer, formatter, model = setup
    model64 = copy.deepcopy(model).double()
    weight = model64.get_input_embeddings().weight.detach()
    grad = suffix_gradient(model64, formatter, FORGET[:2], SUFFIX)
    # h = 1e-3: Llama's RMSNorm computes in float32 even in a float64 model, so smaller steps drown in rounding
    position, h = 2, 1e-3

    def loss_with_embedding_shift(shift):
        total = 0.0
        for ex in FORGET[:2]:
            before = ids(tokenizer, f"Question: {ex.question}", special=True)
            rest = ids(tokenizer, "\nAnswer: ") + ids(tokenizer, ex.answer) + [tokenizer.eos_token_id]
            sequence = before + SUFFIX + rest
            embeds = weight[sequence].clone()
            embeds[len(before) + position] += shift  # x_{i,v} += h moves e_i by h·W_v
            with torch.no_grad():
                logits = model64(inputs_embeds=embeds[None]).logits[0]
            start = len(sequence) - len(ids(tokenizer, ex.answer)) - 1
            logprobs = torch.log_softmax(logits, dim=-1)
            answer_logprob = sum(logprobs[t - 1, sequence[t]] for t in range(start, len(sequence)))
            total += -float(answer_logprob) / (len(sequence) - start)
        return total / 2

    for token in (5, 77, 200):
        up, down = loss_with_embedding_shift(h * weight[token]), loss_with_embedding_shift(-h * weight[token])
        numeric = (up - down) / (2 * h)
        assert float(grad[position, token]) == pytest.approx(numeric, rel=2e-2, abs=1e-6)


# --- candidates and the search ----------------------------------------------------------------------------------


def test_candidates_are_single_substitutions_from_the_top_k_allowed_tokens():
    gradient = torch.randn(4, 30, generator=torch.Generator().manual_seed(0))
    suffix = torch.tensor([1, 2, 3, 4])
    allowed = torch.tensor([t for t in range(30) if t % 3])  # multiples of 3 are not allowed
    out = sample_candidates(suffix, gradient, allowed, 5, 200, torch.Generator().manual_seed(1))
    assert out.shape == (200, 4)
    for row in out:
        changed = (row != suffix).nonzero().flatten().tolist()
        assert len(changed) <= 1
        for i in changed:
            ranked = sorted(allowed.tolist(), key=lambda t: float(gradient[i, t]))[:5]  # most negative first
            assert int(row[i]) in ranked
    again = sample_candidates(suffix, gradient, allowed, 5, 200, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    # with top_k=1 every changed token is the allowed argmin of its row
    best = sample_candidates(suffix, gradient, allowed, 1, 50, torch.Generator().manual_seed(2))
    for row in best:
        for i in (row != suffix).nonzero().flatten().tolist():
            assert int(row[i]) == min(allowed.tolist(), key=lambda t: float(gradient[i, t]))


def test_search_keeps_a_non_increasing_loss_equal_to_a_naive_recomputation(setup):
    tokenizer, formatter, model = setup
    result = optimize_suffix(model, formatter, FORGET[:3], suffix_length=4, steps=6, top_k=16, candidates=12,
                             batch_size=7, seed=1)
    assert len(result.losses) == 7 and len(result.accepted) == 6
    for step, (previous, current) in enumerate(zip(result.losses, result.losses[1:])):
        assert current <= previous
        assert (current < previous) == result.accepted[step]
    assert any(result.accepted)
    expected, per_example = naive_loss(model, tokenizer, FORGET[:3], result.suffix_ids)
    assert result.nll_after == pytest.approx(expected, rel=1e-5)
    assert result.losses[-1] == result.nll_after
    assert result.nll_after_per_example == pytest.approx(per_example, rel=1e-5)
    no_suffix = [naive_nll(model, formatter.prompt_ids(ex.question), ids(tokenizer, ex.answer) + [2])
                 for ex in FORGET[:3]]
    assert result.nll_before_per_example == pytest.approx(no_suffix, rel=1e-5)
    # the first loss is the initial suffix's: "!" repeated
    bang = ids(tokenizer, "!")
    assert result.losses[0] == pytest.approx(naive_loss(model, tokenizer, FORGET[:3], bang * 4)[0], rel=1e-5)
    # seeded: the same run gives the same suffix
    assert optimize_suffix(model, formatter, FORGET[:3], suffix_length=4, steps=6, top_k=16, candidates=12,
                           batch_size=7, seed=1).suffix_ids == result.suffix_ids


def test_allowed_tokens_restrict_the_suffix(setup):
    _, formatter, model = setup
    allowed = list(range(100, 120))
    result = optimize_suffix(model, formatter, FORGET[:2], suffix_length=3, steps=4, candidates=8,
                             init=[100, 101, 102], allowed_tokens=allowed)
    assert set(result.suffix_ids) <= set(allowed)


def test_suffix_lowers_the_forget_nll_of_the_unlearned_model(attack_setup):
    formatter, unlearned = attack_setup["formatter"], attack_setup["unlearned"]
    weights = {k: v.clone() for k, v in unlearned.state_dict().items()}
    result = optimize_suffix(unlearned, formatter, FORGET, suffix_length=5, steps=10, top_k=32, candidates=32)
    assert result.nll_after < result.losses[0]
    assert result.nll_after < result.nll_before  # better than no suffix at all
    assert all(torch.equal(weights[k], v) for k, v in unlearned.state_dict().items())
    # transfer: the suffix optimised on the target model, measured on the unlearned one
    target_suffix = optimize_suffix(attack_setup["target"], formatter, FORGET, suffix_length=5, steps=2,
                                    candidates=8).suffix_ids
    tokenizer = formatter.tokenizer
    expected = naive_loss(unlearned, tokenizer, FORGET, target_suffix)[0]
    assert suffix_loss(unlearned, formatter, FORGET, target_suffix) == pytest.approx(expected, rel=1e-5)


def test_bad_settings_are_refused(setup):
    _, formatter, model = setup
    with pytest.raises(UnlearnkitError, match="encodes to"):
        optimize_suffix(model, formatter, FORGET, suffix_length=2, steps=1, init="!")
    with pytest.raises(UnlearnkitError, match="no examples"):
        optimize_suffix(model, formatter, [], steps=1)
    with pytest.raises(UnlearnkitError, match="max_length"):
        optimize_suffix(model, formatter, FORGET, suffix_length=120, steps=1)
    with pytest.raises(UnlearnkitError, match="candidates"):
        optimize_suffix(model, formatter, FORGET, candidates=0, steps=1)


# --- evaluation under the attack --------------------------------------------------------------------------------


def test_evaluate_with_suffix_scores_the_suffixed_prompts(setup):
    tokenizer, formatter, model = setup
    task = make_task()
    result = evaluate_with_suffix(model, evaluator(task, formatter, max_new_tokens=4), SUFFIX)
    probs = [math.exp(-v) for v in naive_loss(model, tokenizer, task.eval_forget, SUFFIX)[1]]
    assert result.per_example["forget_Q_A_Prob"] == pytest.approx(probs, rel=1e-5)
    assert set(result.aggregates) >= {"forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio"}
    plain = evaluate_with_suffix(model, evaluator(task, formatter, max_new_tokens=4), [], metrics=("forget_Q_A_Prob",))
    assert plain.per_example["forget_Q_A_Prob"] != pytest.approx(probs, rel=1e-5)


def test_paraphrase_evaluation_uses_the_paraphrased_questions(setup):
    tokenizer, formatter, model = setup
    paraphrases = {0: "Who is the author of The Glass Orchard?", 2: "What kind of books does Mira Solen write?"}
    forget = [replace(ex, paraphrased_question=paraphrases.get(i)) for i, ex in enumerate(FORGET)]
    task = Task(name="p", forget=forget, retain=RETAIN, eval_forget=forget, eval_retain=RETAIN)
    assert [ex.question for ex in paraphrased_examples(forget)] == list(paraphrases.values())
    result = evaluate_paraphrased(model, evaluator(task, formatter, max_new_tokens=4))
    expected = [math.exp(-naive_nll(model, naive_prompt(tokenizer, q, []), ids(tokenizer, FORGET[i].answer) + [2]))
                for i, q in paraphrases.items()]
    assert result.per_example["forget_Q_A_Prob"] == pytest.approx(expected, rel=1e-5)
    assert len(result.generations["forget"]) == 2
    with_suffix = evaluate_paraphrased(model, evaluator(task, formatter), metrics=("forget_Q_A_Prob",),
                                       suffix_ids=SUFFIX)
    expected = [math.exp(-naive_nll(model, naive_prompt(tokenizer, q, SUFFIX),
                                    ids(tokenizer, FORGET[i].answer) + [2])) for i, q in paraphrases.items()]
    assert with_suffix.per_example["forget_Q_A_Prob"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(UnlearnkitError, match="paraphrased_question"):
        evaluate_paraphrased(model, evaluator(make_task(), formatter))
    with pytest.raises(UnlearnkitError, match="forget-split"):
        evaluate_paraphrased(model, evaluator(task, formatter), metrics=("retain_Q_A_Prob",))


def test_attack_evaluations_keep_nothing_and_draw_no_intervals(setup, tmp_path):
    """The attacks evaluate through the caller's Evaluator (its settings and formatter) but, as before, keep nothing
    in the result store and draw no intervals, whatever the Evaluator would do by itself."""
    _, formatter, model = setup
    task = make_task()
    storing = Evaluator(task, formatter, EvalConfig(max_new_tokens=4, intervals=True, n_resamples=10),
                        cache_dir=tmp_path, store=True, progress=False)
    result = evaluate_with_suffix(model, storing, SUFFIX)
    assert result.intervals == {} and not any(tmp_path.iterdir())
    plain = evaluate_with_suffix(model, evaluator(task, formatter, max_new_tokens=4), SUFFIX)
    assert result.to_dict() == plain.to_dict()
    suffixed = retarget(storing, formatter=SuffixFormatter(formatter, SUFFIX))
    assert (suffixed.task, suffixed.config, suffixed.metrics, suffixed.cache_dir, suffixed.store) == \
        (task, storing.config, storing.metrics, tmp_path, True)
    assert isinstance(suffixed.formatter, SuffixFormatter) and storing.formatter is formatter
    with pytest.raises(UnlearnkitError, match="takes an Evaluator"):
        evaluate_with_suffix(model, formatter, SUFFIX)


def test_default_and_ascii_allowed_tokens_leave_out_special_tokens(setup):
    tokenizer, _, model = setup
    special = set(tokenizer.all_special_ids)
    default = default_allowed_tokens(tokenizer, model.get_input_embeddings().weight.shape[0])
    assert set(default) == set(range(len(tokenizer))) - special
    ascii_ids = ascii_token_ids(tokenizer)
    assert not set(ascii_ids) & special
    assert tokenizer.convert_tokens_to_ids("!") in ascii_ids
    assert all(tokenizer.decode([t]).isascii() for t in ascii_ids)
    assert len(ascii_ids) < len(default)  # byte tokens that decode to no valid text are left out
