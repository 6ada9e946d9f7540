"""Greedy generation: continuous batching where the model allows it, ``model.generate`` otherwise.

:func:`generate_continuations` is the one generation path of the TOFU suite, the MUSE suite and the attacks: it
continues arbitrary prompts (token ids) greedily, with continuous batching where the model allows it
(:mod:`~unlearnkit.evaluation.scoring.greedy`) and left-padded ``model.generate`` batches otherwise, stops each row
at an end token, and decodes only the new tokens, without special tokens (``skip_special_tokens=True``,
``clean_up_tokenization_spaces=True``, as OpenUnlearning's ``eval_text_similarity`` and MUSE's reference do). It
keeps finished units in a result store (an interrupted evaluation resumes) and deals them out across a process
group. Given the tokens a continuation is known to start with, it decodes only the rest.

:func:`generate_answers` builds on it for questions: prompts from a :class:`QAFormatter`, answers stripped, ordered
by their expected length, and the known start of an answer read off its teacher-forced score (:func:`greedy_prefix`:
the scoring pass already showed the model writing the first tokens of its gold answer).
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
    writes all of it, its EOS included, without a single decoding step. With ``tokenization="joint"`` an answer
    whose sequence does not start with the prompt's own tokens (the boundary merged) gives no known prefix.
    """
    encoded = formatter.encode(question, answer)
    if encoded.prompt_ids != formatter.prompt_ids(question):
        return []  # joint tokenization merged the prompt's end into the answer: the scored tokens are not greedy's
    answer_ids = encoded.answer_ids
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


def end_token_ids(model, eos_token_id: int | None) -> list[int]:
    """The tokens that end a generation: ``eos_token_id`` (the tokenizer's EOS; None for none) plus any end tokens
    in the model's generation config (e.g. an end-of-turn token)."""
    ids = [] if eos_token_id is None else [int(eos_token_id)]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids += [int(config_eos)] if isinstance(config_eos, int) else [int(i) for i in config_eos]
    return _unique(ids)


def generate_continuations(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int,
    stop_ids: Sequence[int],
    pad_token_id: int,
    store: ResultStore | None = None,
    keys: Sequence[str] | None = None,
    progress: bool = False,
    known_prefixes: Sequence[Sequence[int]] | None = None,
    expected_lengths: Sequence[int] | None = None,
    strip: bool = True,
    desc: str = "generating",
) -> list[str]:
    """Greedy continuations of ``prompts`` (token ids), decoded, in order; each distinct key is generated once.

    ``keys[i]`` names ``prompts[i]`` in ``store`` (default: the prompt's ids, :func:`item_key`); prompts with one
    key share one continuation. Prompts are ordered by ``expected_lengths`` (expected new tokens, default 0) less
    their known prefix, longest first, then by length. Decoding is greedy (the argmax of the float32 logits, with
    the model's KV cache) for at most ``max_new_tokens`` tokens and stops at a token of ``stop_ids``. Models with a
    plain key/value cache decode with continuous batching (:mod:`unlearnkit.evaluation.scoring.greedy`: up to
    ``batch_size`` rows run, and a row that ends is taken by the next prompt), in units of ``CONTINUOUS_UNIT``
    batches' worth of prompts, and the opening every prompt shares runs once
    (:mod:`~unlearnkit.evaluation.scoring.shared_prefix`); the others run ``model.generate`` (``do_sample=False``,
    one beam) on left-padded batches of ``batch_size``, where the ordering puts continuations that should end
    together in one batch. The text is the new tokens up to the first stop token, decoded with
    ``skip_special_tokens=True`` and ``clean_up_tokenization_spaces=True``, and stripped of surrounding whitespace
    when ``strip``.

    ``store`` keeps each finished unit (or batch): an interrupted call resumes and a repeated one only reads. In a
    ``torch.distributed`` process group the units are dealt out across processes and the texts gathered on every
    process (:mod:`unlearnkit.evaluation.scoring.distributed`), the same as one process's.

    ``known_prefixes[i]`` (token ids the continuation of ``prompts[i]`` is known to start with; empty for none)
    saves the decoding steps of those tokens: a continuation whose known prefix holds a stop token or fills
    ``max_new_tokens`` needs no model call at all (and is not stored), the others decode from prompt + prefix. The
    caller vouches for the prefixes; a wrong one gives a wrong text.
    """
    _check_batch_size(batch_size)
    if max_new_tokens < 1:
        raise UnlearnkitError(f"max_new_tokens must be at least 1, got {max_new_tokens}: pass a positive number")
    keys = [item_key(list(prompt)) for prompt in prompts] if keys is None else list(keys)
    for name, values in (("keys", keys), ("known_prefixes", known_prefixes), ("expected_lengths", expected_lengths)):
        if values is not None and len(values) != len(prompts):
            raise UnlearnkitError(f"{len(prompts)} prompts but {len(values)} {name}: pass one per prompt")
    first: dict[str, int] = {}  # each key's first prompt
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    unique = list(first)
    inputs_of = {key: list(prompts[first[key]]) for key in unique}
    stored = load_all_before_any_append(store)
    texts: dict[str, str] = {key: stored[key]["text"] for key in unique if key in stored}
    prefixes = {key: list(known_prefixes[first[key]])[:max_new_tokens] for key in unique
                if known_prefixes is not None and len(known_prefixes[first[key]])}
    expected = {key: expected_lengths[first[key]] for key in unique} if expected_lengths is not None else {}

    def decode(ids: list[int]) -> str:
        return decode_until_stop(tokenizer, ids, stop_ids, strip=strip)

    whole = {key: decode(prefix) for key, prefix in prefixes.items()
             if set(prefix) & set(stop_ids) or len(prefix) == max_new_tokens}  # the text: no model call

    def still_to_write(key: str) -> tuple[int, int]:
        known = len(prefixes.get(key, ()))
        return expected.get(key, 0) - known, len(inputs_of[key]) + known

    ordered = sorted(unique, key=still_to_write, reverse=True)
    continuous = supports_continuous_batching(model)  # else model.generate, one batch at a time
    unit = batch_size * CONTINUOUS_UNIT if continuous else batch_size
    units = [u for u in _chunks([k for k in ordered if k not in whole], unit) if not all(k in texts for k in u)]
    texts.update(whole)
    mine = my_batches(units)
    device = model_device(model)
    # the opening every prompt shares (all of them, not this process's: the same on every process) runs once
    opening = shared_prefix(model, continuous or None, inputs_of.values(), device)
    computed: dict[str, str] = {}
    with evaluation_mode(model):
        for unit_keys in _progress(mine, len(mine), desc, progress):
            known = [prefixes.get(key, []) for key in unit_keys]
            inputs = [inputs_of[key] + prefix for key, prefix in zip(unit_keys, known)]
            budgets = [max_new_tokens - len(prefix) for prefix in known]
            if continuous:
                new_tokens = greedy_continuous(model, continuous, inputs, budgets, stop_ids, pad_token_id,
                                               batch_size, device, opening)
            else:
                new_tokens = _generate_batch(model, inputs, budgets, list(stop_ids), pad_token_id, device)
            unit_texts = {key: decode(prefix + row[:budget])
                          for key, prefix, row, budget in zip(unit_keys, known, new_tokens, budgets)}
            if store is not None:
                store.append({key: {"text": text} for key, text in unit_texts.items()})
            computed.update(unit_texts)
    texts.update(gather_dicts(computed))
    return [texts[key] for key in keys]


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

    The continuations (:func:`generate_continuations`) of ``formatter.prompt_ids(question)``, stored under the
    question (:func:`item_key`), stopped at the formatter's EOS and the model's generation-config end tokens, and
    stripped, as OpenUnlearning does. Questions are ordered by ``expected_lengths`` (question → expected answer
    tokens, e.g. the gold answer's), longest first, then by prompt length.

    ``known_prefixes`` (question → token ids its greedy answer is known to start with, from :func:`greedy_prefix`)
    saves the decoding steps of those tokens: an answer whose known prefix holds an end token or fills
    ``max_new_tokens`` needs no model call at all, the others decode from prompt + prefix (batched by what is left
    to write). The caller vouches for the prefixes; a wrong one gives a wrong answer.
    """
    unique_questions = _unique(list(questions))
    expected, known = expected_lengths or {}, known_prefixes or {}
    answers = generate_continuations(
        model, formatter.tokenizer, [formatter.prompt_ids(q) for q in unique_questions], max_new_tokens, batch_size,
        end_token_ids(model, formatter.eos_token_id), formatter.pad_token_id, store=store,
        keys=[item_key(q) for q in unique_questions], progress=progress,
        known_prefixes=[known.get(q, ()) for q in unique_questions],
        expected_lengths=[expected.get(q, 0) for q in unique_questions], desc="generating answers")
    by_question = dict(zip(unique_questions, answers))
    return [by_question[q] for q in questions]


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


def decode_until_stop(tokenizer, token_ids: Sequence[int], stop_ids: Sequence[int], strip: bool = True) -> str:
    """Decode generated ids up to (not including) the first stop token, without special tokens, and with
    ``clean_up_tokenization_spaces=True``; stripped of surrounding whitespace when ``strip``."""
    ids = list(token_ids)
    stops = set(stop_ids)
    cut = next((i for i, t in enumerate(ids) if t in stops), len(ids))
    text = tokenizer.decode(ids[:cut], skip_special_tokens=True, clean_up_tokenization_spaces=True)
    return text.strip() if strip else text
