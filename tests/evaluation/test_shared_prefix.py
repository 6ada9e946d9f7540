"""The opening every prompt shares runs once (unlearnkit.evaluation.scoring.shared_prefix), with the same scores and answers.

The tiny model gets a chat template whose system prompt opens every prompt, as SmolLM2's does. References: the
scores of every (prompt + answer) sequence run whole (score_pairs' plain path, itself tested against one pair at a
time), and plain greedy decoding of one question alone without a cache (as in test_greedy.py). The opening's cache
comes from a one-row pass, other matrix shapes than the whole sequences', so log-probs agree to float32 rounding
(TOL) and the argmax predictions and generated tokens exactly.
"""

import pytest
import torch
from tiny_lm import assert_same_scores, fit, tiny_lm

from unlearnkit.data.formatting import QAFormatter, collate
from unlearnkit.evaluation.scoring.greedy import greedy_continuous
from unlearnkit.evaluation.scoring.generation import generate_answers
from unlearnkit.evaluation.scoring.passes import score_pairs
from unlearnkit.evaluation.scoring.shared_prefix import SharedPrefix, common_prefix, shared_prefix

SYSTEM = "You are a careful assistant who answers questions about books and their authors."
TEMPLATE = ("{% for m in messages %}<|system|>" + SYSTEM + "\n<|user|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
QUESTIONS = {
    "Who wrote The Glass Orchard?": ["Mira Solen wrote The Glass Orchard in 1998.", "Tom Hale wrote it.",
                                     "It was written by Ana Ruiz in 2001, in a small flat by the sea."],
    "Where was Mira Solen born?": ["She was born in Oslo.", "Lima.", "Her birthplace is Cairo, a large city."],
    "What genre does Mira Solen write, and why?": ["Quiet literary fiction about orchards.", "Horror."],
    "Who is Ivo Brand?": ["A novelist.", "Ivo Brand won the Harbor Prize in 2010 for Salt Roads."],
    "What is the capital of France?": ["Paris"],
    "How many legs does a spider have?": ["Eight", "Six legs, like every insect."],
}
PAIRS = [(q, a) for q, answers in QUESTIONS.items() for a in answers]
TOL = 1e-5


@pytest.fixture(scope="module")
def setup():
    model, plain = tiny_lm([SYSTEM] + [q + " " + a for q, a in PAIRS])
    tokenizer = plain.tokenizer
    tokenizer.chat_template = TEMPLATE
    formatter = QAFormatter(tokenizer, max_length=256, template="chat")
    model.set_attn_implementation("eager")
    fit(model, collate([formatter.encode(q, answers[0]) for q, answers in QUESTIONS.items()], formatter.pad_token_id),
        steps=60)
    return model.eval(), formatter


def opening_of(formatter) -> tuple[int, ...]:
    return common_prefix(formatter.prompt_ids(q) for q in QUESTIONS)


def record_inputs(model):
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a, k: seen.append(k["input_ids"].clone()), with_kwargs=True)
    return seen, handle


def starts_with(rows: torch.Tensor, ids: tuple[int, ...]) -> bool:
    return rows.shape[1] >= len(ids) and bool((rows[:, : len(ids)] == torch.tensor(ids)).all(dim=1).any())


def test_common_prefix_leaves_every_sequence_its_last_tokens():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5, 6, 7], [1, 2, 3]]) == (1, 2)
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == (1, 2)  # the shortest keeps its last token
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]], keep=2) == (1,)
    assert common_prefix([[5, 6, 7]]) == (5, 6)
    assert common_prefix([[1, 2], [3, 4]]) == ()
    assert common_prefix([]) == ()


def test_an_opening_of_fewer_than_four_tokens_is_not_run_apart():
    """A pass of 1 to 3 positions takes other matrix kernels on the CPU, which round differently (MIN_PASS_POSITIONS):
    such an opening runs with each prompt instead."""
    cpu = torch.device("cpu")
    assert shared_prefix(None, "cache", [[1, 2, 3, 9, 9], [1, 2, 3, 8, 8]], cpu) is None
    opening = shared_prefix(None, "cache", [[1, 2, 3, 4, 9], [1, 2, 3, 4, 8]], cpu)
    assert isinstance(opening, SharedPrefix) and opening.ids == [1, 2, 3, 4]
    assert shared_prefix(None, None, [[1, 2, 3, 4, 9], [1, 2, 3, 4, 8]], cpu) is None  # no cache: nothing to share


def test_the_chat_template_opens_every_prompt_with_the_same_tokens(setup):
    _, formatter = setup
    opening = opening_of(formatter)
    assert len(opening) >= 10  # the system prompt and the user-turn header
    assert SYSTEM in formatter.tokenizer.decode(list(opening))


def test_scores_on_the_shared_opening_equal_the_whole_sequences(setup):
    model, formatter = setup
    opening = opening_of(formatter)
    seen, handle = record_inputs(model)
    try:
        shared = score_pairs(model, formatter, PAIRS, batch_size=4, moments=True)
        calls = list(seen)
    finally:
        handle.remove()
    assert_same_scores(shared, score_pairs(model, formatter, PAIRS, batch_size=4, moments=True, share_prompts=False),
                       PAIRS, TOL)
    # the opening ran once, alone; no other call ran it again
    assert calls[0].tolist() == [list(opening)]
    assert not any(starts_with(ids, opening) for ids in calls[1:])
    assert len(calls) > 3


def test_generation_from_the_shared_opening_equals_one_question_at_a_time(setup):
    model, formatter = setup
    inputs = [formatter.prompt_ids(q) for q in QUESTIONS]
    inputs[1] = inputs[1] + formatter.answer_ids("She was")[:-1]  # a known answer start, as from the gold prefix
    budgets = [14, 9, 14, 1, 14, 6]
    stops = [formatter.eos_token_id]
    opening = SharedPrefix(model, "cache", opening_of(formatter), torch.device("cpu"))
    seen, handle = record_inputs(model)
    try:
        with torch.inference_mode():
            out = greedy_continuous(model, "cache", inputs, budgets, stops, formatter.pad_token_id, batch_size=3,
                                    device=torch.device("cpu"), shared=opening)
    finally:
        handle.remove()
    expected = []
    for ids, budget in zip(inputs, budgets):
        new = []
        with torch.no_grad():
            while len(new) < budget and not (new and new[-1] in stops):
                new.append(int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax()))
        expected.append(new)
    assert out == expected
    assert any(e[-1] in stops for e in expected) and any(len(e) == b > 1 for e, b in zip(expected, budgets))
    assert seen[0].tolist() == [list(opening.ids)]  # run once, then only the rows' own tokens
    assert not any(starts_with(ids, tuple(opening.ids)) for ids in seen[1:])
    prefills = [ids for ids in seen[1:] if ids.shape[1] > 1]
    assert sum(len(ids) for ids in prefills) == len(inputs) and len(prefills) > 2  # rows joined as others ended


def test_generate_answers_with_the_opening_equals_generate(setup, monkeypatch):
    model, formatter = setup
    questions = list(QUESTIONS)
    answers = generate_answers(model, formatter, questions, max_new_tokens=14, batch_size=3)
    monkeypatch.setattr("unlearnkit.evaluation.scoring.generation.supports_continuous_batching", lambda model: None)
    assert answers == generate_answers(model, formatter, questions, max_new_tokens=14, batch_size=3)
