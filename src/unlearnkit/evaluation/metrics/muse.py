"""MUSE's generation metrics on a raw-text task: VerbMem (verbatim memorisation) and KnowMem (knowledge).

Paper: "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", Shi et al. 2024, arXiv:2407.06460.
Reference implementation: swj0419/muse_bench, ``metrics/verbmem.py``, ``metrics/knowmem.py`` and
``metrics/logger.py`` (``RougeEvalLogger``), ``eval.py`` (defaults: 128 new tokens for VerbMem, 32 for KnowMem,
aggregate ``mean_rougeL``). Both metrics score a greedy generation with ROUGE-L F1 (:func:`rouge_l_f1`) and
aggregate by the mean over examples. Values here are in [0, 1]; MUSE's ``eval_model`` reports them ×100.

- **VerbMem** (forget texts): prompt = the first ``prefix_tokens`` tokens of a forget text, preceded
  by the special tokens the tokenizer puts in front of a text (e.g. BOS); reference = the next
  ``max_new_tokens`` tokens of the same text, decoded. VerbMem = mean_x ROUGE-L-F1(generation(x[:l]), x[l:l+n]).
  The reference ships the prompt and the continuation as text and re-tokenizes the continuation with BOS before
  keeping its first 128 tokens (so 127 text tokens under a BOS tokenizer); here both come from one tokenization
  of the text and the continuation is exactly ``max_new_tokens`` text tokens. Texts with at most
  ``prefix_tokens`` tokens have no continuation: they are skipped and counted (``skipped``), and it is an error
  when every forget text is skipped. Cut long texts first (:meth:`CorpusTask.chunked`) to score each window.
  The reference's data files hold the prompts as text, so its code does not fix their length; the default of 32
  tokens is the project's spec (research/metrics.md §3, after the paper) and a reconstruction.
- **KnowMem** (forget and retain QA): prompt = the few-shot examples, each ``"Question: {q}\\nAnswer: {a}\\n\\n"``,
  followed by ``"Question: {q}\\nAnswer: "`` (:func:`knowmem_prompt`), tokenized with the tokenizer's special
  tokens as the reference does. The generation is cut before the first of ``"\\n\\n"``, ``"\\nQuestion"`` and
  ``"Question:"`` (:func:`cut_at_stop_strings`), then scored against the answer. The reference uses every
  example of its ``*_qa_icl`` file as a shot; so does this module (no shots = zero-shot prompts).

Generation (:func:`_greedy_continuations`): prompts are sorted by length and run in left-padded batches,
greedy (``do_sample=False``), until ``max_new_tokens`` or an end token (the tokenizer's EOS and the model's
generation-config EOS; the reference stops at the latter). New tokens up to the first end token are decoded with
``skip_special_tokens=True`` and ``clean_up_tokenization_spaces=True``, as in the reference; the text is
stripped only after the stop-string cut (ROUGE ignores whitespace, so the score is the reference's). For KnowMem
the stop strings are also passed to ``generate`` (``stop_strings`` with the tokenizer), which ends a row once
its text contains one; the text after a stop string is cut anyway, so this only saves time. Tests check every
per-example value against unbatched ``generate`` plus ``rouge_score`` one example at a time.

As for the TOFU suite's generations (:func:`unlearnkit.evaluation.scoring.generation.generate_answers`), a ``store``
(:class:`~unlearnkit.evaluation.scoring.store.ResultStore`) keeps every finished batch's continuations on disk, keyed by
(prompt ids, ``max_new_tokens``, stop strings), so an interrupted evaluation resumes and a repeated one only reads;
in a ``torch.distributed`` process group the batches are dealt out across processes and the continuations gathered
on every process (:mod:`unlearnkit.evaluation.scoring.distributed`), the same as one process's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import torch
from rouge_score import rouge_scorer

from unlearnkit.data.corpus import CorpusTask
from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.scoring.distributed import gather_dicts, load_all_before_any_append, my_batches
from unlearnkit.evaluation.scoring.store import ResultStore, item_key
from unlearnkit.evaluation.scoring.passes import evaluation_mode, model_device

VERBMEM_PREFIX_TOKENS = 32
VERBMEM_MAX_NEW_TOKENS = 128
KNOWMEM_MAX_NEW_TOKENS = 32
KNOWMEM_STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")  # knowmem.py: get_prefix_before_words_occur
MUSE_METRICS = ("verbmem_f", "knowmem_f", "knowmem_r")

_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)  # logger.py: RougeEvalLogger


@dataclass(frozen=True)
class MuseExample:
    """One scored generation: the prompt (for VerbMem, the prefix text), the reference text, the model's text."""

    prompt: str
    reference: str
    generation: str
    rougeL_f1: float


def rouge_l_f1(reference: str, generation: str) -> float:
    """ROUGE-L F1 = 2·P·R / (P + R), P = LCS / |generation|, R = LCS / |reference| (0 when the LCS is empty).

    ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)`` as in MUSE's ``RougeEvalLogger``:
    its tokenizer lowercases and splits on anything that is not a letter or a digit.
    """
    return float(_SCORER.score(reference, generation)["rougeL"].fmeasure)


def cut_at_stop_strings(text: str, stop_strings: Sequence[str] = KNOWMEM_STOP_STRINGS) -> str:
    """``text`` up to (not including) the first stop string: MUSE's ``get_prefix_before_words_occur``.

    Like the reference, splits at each stop string in turn and keeps the part before it (for MUSE's stop
    strings, which cannot overlap one another, that is the prefix before the earliest occurrence of any).
    """
    for stop in stop_strings:
        text = text.split(stop)[0]
    return text


def knowmem_prompt(question: str, shots: Sequence[QAExample] = ()) -> str:
    """The few-shot KnowMem prompt, exactly as MUSE's ``knowmem.py`` writes it."""
    demonstrations = "".join(f"Question: {shot.question}\nAnswer: {shot.answer}\n\n" for shot in shots)
    return demonstrations + f"Question: {question}\nAnswer: "


def _leading_special_ids(tokenizer, text: str, text_ids: list[int]) -> list[int]:
    """The special tokens the tokenizer puts before ``text`` (e.g. BOS), found by tokenizing it both ways."""
    with_special = list(tokenizer(text)["input_ids"])
    for start in range(len(with_special) - len(text_ids) + 1):
        if with_special[start : start + len(text_ids)] == text_ids:
            return with_special[:start]
    return []


def _end_ids(model, tokenizer) -> list[int]:
    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids += [int(config_eos)] if isinstance(config_eos, int) else [int(i) for i in config_eos]
    return list(dict.fromkeys(ids))


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise UnlearnkitError("the tokenizer has neither a pad nor an eos token: set tokenizer.pad_token")
    return int(pad)


def _greedy_continuations(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int, batch_size: int,
                          stop_strings: Sequence[str] = (), store: ResultStore | None = None) -> list[str]:
    """Greedy continuation of each prompt (token ids), decoded up to the first end token; in prompt order.

    Batches already in ``store`` are read; the others are computed (dealt out across a process group) and stored.
    """
    if batch_size < 1:
        raise UnlearnkitError(f"batch_size must be at least 1, got {batch_size}: pass a positive batch size")
    if max_new_tokens < 1:
        raise UnlearnkitError(f"max_new_tokens must be at least 1, got {max_new_tokens}: pass a positive number")
    end_ids, pad_id, device = _end_ids(model, tokenizer), _pad_id(tokenizer), model_device(model)
    stop_kwargs = {"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}
    keys = [item_key([list(prompt), max_new_tokens, list(stop_strings)]) for prompt in prompts]
    stored = load_all_before_any_append(store)
    texts = {key: stored[key]["text"] for key in keys if key in stored}
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    batches = [order[first : first + batch_size] for first in range(0, len(order), batch_size)]
    computed: dict[str, str] = {}
    with evaluation_mode(model):
        for rows in my_batches([rows for rows in batches if not all(keys[i] in texts for i in rows)]):
            width = max(len(prompts[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                input_ids[r, width - len(prompts[i]) :] = torch.tensor(prompts[i], dtype=torch.long)
                attention_mask[r, width - len(prompts[i]) :] = 1
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, temperature=None, top_p=None,
                top_k=None, eos_token_id=end_ids, pad_token_id=pad_id, **stop_kwargs,
            )
            batch_texts = {}
            for i, new_ids in zip(rows, output[:, width:].cpu().tolist()):
                cut = next((t for t, token in enumerate(new_ids) if token in end_ids), len(new_ids))
                batch_texts[keys[i]] = _decode(tokenizer, new_ids[:cut])
            if store is not None:
                store.append({key: {"text": text} for key, text in batch_texts.items()})
            computed.update(batch_texts)
    texts.update(gather_dicts(computed))
    return [texts[key] for key in keys]


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=True)


def _mean(examples: Sequence[MuseExample]) -> float | None:
    return sum(ex.rougeL_f1 for ex in examples) / len(examples) if examples else None


def verbmem(model, tokenizer, texts: Sequence[str], prefix_tokens: int = VERBMEM_PREFIX_TOKENS,
            max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS, batch_size: int = 16,
            store: ResultStore | None = None) -> tuple[list[MuseExample], int]:
    """VerbMem per text (see the module docstring): the scored examples and how many texts were too short."""
    if prefix_tokens < 1:
        raise UnlearnkitError(f"prefix_tokens must be at least 1, got {prefix_tokens}: pass a positive length")
    prompts, prefixes, references = [], [], []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) <= prefix_tokens:
            continue
        prompts.append(_leading_special_ids(tokenizer, text, ids) + ids[:prefix_tokens])
        prefixes.append(_decode(tokenizer, ids[:prefix_tokens]))
        references.append(_decode(tokenizer, ids[prefix_tokens : prefix_tokens + max_new_tokens]))
    skipped = len(texts) - len(prompts)
    if texts and not prompts:
        raise UnlearnkitError(f"none of the {len(texts)} forget texts is longer than prefix_tokens={prefix_tokens} "
                              "tokens, so VerbMem has nothing to continue: lower prefix_tokens or use longer texts")
    generations = _greedy_continuations(model, tokenizer, prompts, max_new_tokens, batch_size, store=store)
    examples = [MuseExample(prefix, reference, generation.strip(), rouge_l_f1(reference, generation))
                for prefix, reference, generation in zip(prefixes, references, generations)]
    return examples, skipped


def knowmem(model, tokenizer, qa: Sequence[QAExample], shots: Sequence[QAExample] = (),
            max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS, batch_size: int = 16,
            store: ResultStore | None = None) -> list[MuseExample]:
    """KnowMem per question (see the module docstring), prompted with ``shots`` as few-shot examples."""
    prompts = [knowmem_prompt(ex.question, shots) for ex in qa]
    prompt_ids = [list(tokenizer(prompt)["input_ids"]) for prompt in prompts]
    generations = _greedy_continuations(model, tokenizer, prompt_ids, max_new_tokens, batch_size,
                                        stop_strings=KNOWMEM_STOP_STRINGS, store=store)
    examples = []
    for prompt, ex, generation in zip(prompts, qa, generations):
        answer = cut_at_stop_strings(generation)
        examples.append(MuseExample(prompt, ex.answer, answer.strip(), rouge_l_f1(ex.answer, answer)))
    return examples


def evaluate_muse(model, tokenizer, task: CorpusTask, metrics: Iterable[str] | None = None,
                  prefix_tokens: int = VERBMEM_PREFIX_TOKENS, verbmem_max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS,
                  knowmem_max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS, batch_size: int = 16,
                  store: ResultStore | None = None) -> dict:
    """VerbMem on the forget texts, KnowMem on the forget and retain QA; ``metrics`` picks among
    ``verbmem_f``, ``knowmem_f``, ``knowmem_r`` (all by default).

    Returns ``{"aggregates": {metric: mean ROUGE-L F1 or None}, "per_example": {metric: [MuseExample as dict]},
    "skipped": {"verbmem_f": texts too short}, "settings": {...}}``. An aggregate is ``None`` when its split is
    empty (no forget texts, no QA).
    """
    wanted = list(MUSE_METRICS) if metrics is None else list(dict.fromkeys(metrics))
    unknown = [m for m in wanted if m not in MUSE_METRICS]
    if unknown:
        raise UnlearnkitError(f"unknown MUSE metric {unknown[0]!r}: choose from {', '.join(MUSE_METRICS)}")
    per_example: dict[str, list[MuseExample]] = {}
    skipped: dict[str, int] = {}
    if "verbmem_f" in wanted:
        per_example["verbmem_f"], skipped["verbmem_f"] = verbmem(
            model, tokenizer, task.forget, prefix_tokens, verbmem_max_new_tokens, batch_size, store)
    splits = {"knowmem_f": (task.forget_qa, task.forget_qa_icl), "knowmem_r": (task.retain_qa, task.retain_qa_icl)}
    for metric, (qa, shots) in splits.items():
        if metric in wanted:
            per_example[metric] = knowmem(model, tokenizer, qa, shots, knowmem_max_new_tokens, batch_size, store)
    return {
        "aggregates": {metric: _mean(examples) for metric, examples in per_example.items()},
        "per_example": {metric: [asdict(ex) for ex in examples] for metric, examples in per_example.items()},
        "skipped": skipped,
        "settings": {
            "prefix_tokens": prefix_tokens, "verbmem_max_new_tokens": verbmem_max_new_tokens,
            "knowmem_max_new_tokens": knowmem_max_new_tokens, "knowmem_shots_forget": len(task.forget_qa_icl),
            "knowmem_shots_retain": len(task.retain_qa_icl),
        },
    }
