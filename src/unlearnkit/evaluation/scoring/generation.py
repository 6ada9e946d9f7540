"""Greedy answers to questions: continuous batching where the model allows it, ``model.generate`` otherwise.

:func:`generate_answers` runs left-padded greedy decoding with continuous batching where the model allows it
(:mod:`~unlearnkit.evaluation.scoring.greedy`), stops each row at an end token, and decodes only the new tokens,
without special tokens (OpenUnlearning's ``eval_text_similarity``: ``skip_special_tokens=True``,
``clean_up_tokenization_spaces=True``, then ``strip()``). Given the tokens an answer is known to start with
(:func:`greedy_prefix`: the scoring pass already showed the model writing the first tokens of its gold answer), it
decodes only the rest. It is the one generation path of the TOFU suite, the MUSE suite and the attacks.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from unlearnkit.data.formatting import Encoded, QAFormatter, collate
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.scoring.distributed import gather_dicts, load_all_before_any_append, my_batches
from unlearnkit.evaluation.scoring.greedy import greedy_continuous, supports_continuous_batching
from unlearnkit.evaluation.scoring.passes import (
    PairScore,
    _check_batch_size,
    _chunks,
    _progress,
    _unique,
    evaluation_mode,
    model_device,
)
from unlearnkit.evaluation.scoring.shared_prefix import shared_prefix
from unlearnkit.evaluation.scoring.store import ResultStore, item_key

# with continuous batching, questions are decoded (stored, dealt to processes) in units of this many batches
CONTINUOUS_UNIT = 4


def greedy_prefix(formatter: QAFormatter, question: str, answer: str, score: PairScore) -> list[int]:
    """The tokens greedy decoding of ``question`` is known to start with, read off the teacher-forced ``score`` of
    ``answer``: the answer's tokens before the first position whose argmax is not the answer's token.

    While the argmax at every earlier position equals the answer's token, greedy decoding has written exactly the
    answer's tokens so far, so its next token is the argmax there too (the same logits: same prompt, same
    preceding tokens; equal up to the rounding of other matrix shapes). A model that knows an answer by heart thus
    writes all of it, its EOS included, without a single decoding step.
    """
    answer_ids = formatter.encode(question, answer).answer_ids
    if len(answer_ids) != len(score.argmax_match):
        raise UnlearnkitError(f"the score of {question!r} has {len(score.argmax_match)} tokens but the answer encodes "
                              f"to {len(answer_ids)}: pass the score computed with this formatter")
    matched = next((i for i, ok in enumerate(score.argmax_match) if not ok), len(answer_ids))
    return answer_ids[:matched]


class _RowBudgets(StoppingCriteria):
    """Stops each row of a batch once it has generated its own number of new tokens."""

    def __init__(self, prompt_width: int, budgets: list[int], device: torch.device):
        self.prompt_width = prompt_width
        self.budgets = torch.tensor(budgets, device=device)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return (input_ids.shape[1] - self.prompt_width) >= self.budgets


def _stop_token_ids(model, formatter: QAFormatter) -> list[int]:
    """The formatter's EOS plus any end tokens in the model's generation config (e.g. an end-of-turn token)."""
    ids = [formatter.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids += [int(config_eos)] if isinstance(config_eos, int) else [int(i) for i in config_eos]
    return _unique(ids)


def generate_answers(
    model,
    formatter: QAFormatter,
    questions: Sequence[str],
    max_new_tokens: int = 200,
    batch_size: int = 16,
    progress: bool = False,
    store: ResultStore | None = None,
    expected_lengths: dict[str, int] | None = None,
    known_prefixes: dict[str, Sequence[int]] | None = None,
) -> list[str]:
    """Greedy answers to ``questions``, in order; each distinct question is generated once.

    Prompts are ``formatter.prompt_ids(question)``, left-padded. Questions are ordered by ``expected_lengths``
    (question → expected answer tokens, e.g. the gold answer's), longest first, then by prompt length. Decoding is
    greedy (the argmax of the float32 logits, with the model's KV cache) for at most ``max_new_tokens`` tokens and
    stops at an end token. Models with a plain key/value cache decode with continuous batching
    (:mod:`unlearnkit.evaluation.scoring.greedy`: up to ``batch_size`` rows run, and a row that ends is taken by the next
    question), in units of ``CONTINUOUS_UNIT`` batches' worth of questions; the others run ``model.generate``
    (``do_sample=False``, one beam) batch by batch, where the ordering puts answers that should end together in one
    batch. The answer is the new tokens up to the first end token, decoded with ``skip_special_tokens=True`` and
    ``clean_up_tokenization_spaces=True`` and stripped of surrounding whitespace, as OpenUnlearning does. ``store``
    and process groups work as in :func:`score_pairs`, with the unit (or batch) as what is stored and dealt out.

    ``known_prefixes`` (question → token ids its greedy answer is known to start with, from :func:`greedy_prefix`)
    saves the decoding steps of those tokens: an answer whose known prefix holds an end token or fills
    ``max_new_tokens`` needs no model call at all, the others decode from prompt + prefix (batched by what is left
    to write). The caller vouches for the prefixes; a wrong one gives a wrong answer.
    """
    _check_batch_size(batch_size)
    if max_new_tokens < 1:
        raise UnlearnkitError(f"max_new_tokens must be at least 1, got {max_new_tokens}: pass a positive number")
    unique_questions = _unique(list(questions))
    prompts = {q: formatter.prompt_ids(q) for q in unique_questions}
    stored = load_all_before_any_append(store)
    answers: dict[str, str] = {q: stored[item_key(q)]["text"] for q in unique_questions if item_key(q) in stored}
    stop_ids = _stop_token_ids(model, formatter)
    prefixes = {q: list(known_prefixes[q])[:max_new_tokens] for q in unique_questions if q in (known_prefixes or {})}
    whole = {q: decode_until_stop(formatter.tokenizer, prefix, stop_ids) for q, prefix in prefixes.items()
             if set(prefix) & set(stop_ids) or len(prefix) == max_new_tokens}  # the answer: no model call
    expected = expected_lengths or {}

    def still_to_write(q: str) -> tuple[int, int]:
        known = len(prefixes.get(q, ()))
        return expected.get(q, 0) - known, len(prompts[q]) + known

    ordered = sorted(unique_questions, key=still_to_write, reverse=True)
    continuous = supports_continuous_batching(model)  # else model.generate, one batch at a time
    unit = batch_size * CONTINUOUS_UNIT if continuous else batch_size
    units = [u for u in _chunks([q for q in ordered if q not in whole], unit) if not all(q in answers for q in u)]
    answers.update(whole)
    mine = my_batches(units)
    device = model_device(model)
    # the opening every prompt shares (all of them, not this process's: the same on every process) runs once
    opening = shared_prefix(model, continuous or None, prompts.values(), device)
    computed: dict[str, str] = {}
    with evaluation_mode(model):
        for unit_questions in _progress(mine, len(mine), "generating answers", progress):
            known = [prefixes.get(q, []) for q in unit_questions]
            inputs = [prompts[q] + prefix for q, prefix in zip(unit_questions, known)]
            budgets = [max_new_tokens - len(prefix) for prefix in known]
            if continuous:
                new_tokens = greedy_continuous(model, continuous, inputs, budgets, stop_ids, formatter.pad_token_id,
                                               batch_size, device, opening)
            else:
                new_tokens = _generate_batch(model, inputs, budgets, stop_ids, formatter.pad_token_id, device)
            texts = {q: decode_until_stop(formatter.tokenizer, prefix + row[:budget], stop_ids)
                     for q, prefix, row, budget in zip(unit_questions, known, new_tokens, budgets)}
            if store is not None:
                store.append({item_key(q): {"text": t} for q, t in texts.items()})
            computed.update(texts)
    answers.update(gather_dicts(computed))
    return [answers[q] for q in questions]


def _generate_batch(model, inputs: list[list[int]], budgets: list[int], stop_ids: list[int], pad_token_id: int,
                    device: torch.device) -> list[list[int]]:
    """``model.generate`` on one left-padded batch: each row's new tokens, at most its budget."""
    batch = collate([Encoded(ids, [-100] * len(ids), len(ids)) for ids in inputs], pad_token_id, padding_side="left")
    width = batch["input_ids"].shape[1]
    output = model.generate(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        max_new_tokens=max(budgets),
        stopping_criteria=StoppingCriteriaList([_RowBudgets(width, budgets, device)]),
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=stop_ids,
        pad_token_id=pad_token_id,
    )
    return output[:, width:].cpu().tolist()


def decode_until_stop(tokenizer, token_ids: Sequence[int], stop_ids: Sequence[int]) -> str:
    """Decode generated ids up to (not including) the first stop token, without special tokens, stripped."""
    ids = list(token_ids)
    cut = next((i for i, t in enumerate(ids) if t in set(stop_ids)), len(ids))
    text = tokenizer.decode(ids[:cut], skip_special_tokens=True, clean_up_tokenization_spaces=True)
    return text.strip()
