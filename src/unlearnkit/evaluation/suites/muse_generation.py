"""The MUSE suite's generations: VerbMem and KnowMem prompts continued greedily by the engine's one generation path.

The prompts, the references and the scoring are MUSE's (:mod:`unlearnkit.evaluation.metrics.muse`, pure); the
generation is :func:`unlearnkit.evaluation.scoring.generation.generate_continuations`, the TOFU suite's: greedy,
continuous batching where the model allows it and ``model.generate`` otherwise, one call per metric (its prompts
share their few-shot opening, which then runs once), at most ``max_new_tokens`` new tokens ending at an end token
(the tokenizer's EOS and the model's generation-config EOS; the reference stops at the latter). The new tokens up
to the first end token are decoded with ``skip_special_tokens=True`` and ``clean_up_tokenization_spaces=True`` and
not stripped: KnowMem cuts its text at the stop strings first
(:func:`~unlearnkit.evaluation.metrics.muse.cut_at_stop_strings`). The reference also passes the stop strings to
``generate``, which only saves time (the text after a stop string is cut anyway), so decoding on to the end token
or the token budget gives the same texts.

A ``store`` (:class:`~unlearnkit.evaluation.scoring.store.ResultStore`) keeps the decoded continuations keyed by
(prompt ids, ``max_new_tokens``), so an interrupted evaluation resumes and a repeated one only reads; in a
``torch.distributed`` process group the work is dealt out across processes and the continuations gathered on every
process (:mod:`unlearnkit.evaluation.scoring.distributed`), the same as one process's.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Iterable, Sequence

from unlearnkit.data.corpus import CorpusTask
from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics.muse import (
    KNOWMEM_MAX_NEW_TOKENS,
    MUSE_METRICS,
    VERBMEM_MAX_NEW_TOKENS,
    VERBMEM_PREFIX_TOKENS,
    MuseExample,
    knowmem_examples,
    knowmem_prompts,
    mean_rouge,
    verbmem_examples,
    verbmem_prompts,
)
from unlearnkit.evaluation.scoring.generation import end_token_ids, generate_continuations
from unlearnkit.evaluation.scoring.store import ResultStore, item_key


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise UnlearnkitError("the tokenizer has neither a pad nor an eos token: set tokenizer.pad_token")
    return int(pad)


def continue_prompts(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int, batch_size: int = 16,
                     store: ResultStore | None = None, progress: bool = False,
                     desc: str = "generating") -> list[str]:
    """Greedy continuation of each prompt (token ids), decoded up to the first end token and not stripped; in
    prompt order (see the module docstring)."""
    return generate_continuations(
        model, tokenizer, prompts, max_new_tokens, batch_size, end_token_ids(model, tokenizer.eos_token_id),
        _pad_id(tokenizer), store=store, keys=[item_key([list(p), max_new_tokens]) for p in prompts],
        progress=progress, strip=False, desc=desc)


def verbmem(model, tokenizer, texts: Sequence[str], prefix_tokens: int = VERBMEM_PREFIX_TOKENS,
            max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS, batch_size: int = 16, store: ResultStore | None = None,
            progress: bool = False) -> tuple[list[MuseExample], int]:
    """VerbMem per text (:func:`~unlearnkit.evaluation.metrics.muse.verbmem_prompts`): the scored examples and how
    many texts were too short."""
    prompts, prefixes, references, skipped = verbmem_prompts(tokenizer, texts, prefix_tokens, max_new_tokens)
    generations = continue_prompts(model, tokenizer, prompts, max_new_tokens, batch_size, store, progress,
                                   "VerbMem")
    return verbmem_examples(prefixes, references, generations), skipped


def knowmem(model, tokenizer, qa: Sequence[QAExample], shots: Sequence[QAExample] = (),
            max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS, batch_size: int = 16, store: ResultStore | None = None,
            progress: bool = False) -> list[MuseExample]:
    """KnowMem per question (:func:`~unlearnkit.evaluation.metrics.muse.knowmem_prompts`), prompted with
    ``shots`` as few-shot examples."""
    prompts, prompt_ids = knowmem_prompts(tokenizer, qa, shots)
    generations = continue_prompts(model, tokenizer, prompt_ids, max_new_tokens, batch_size, store, progress,
                                   "KnowMem")
    return knowmem_examples(prompts, qa, generations)


def evaluate_muse_generations(model, tokenizer, task: CorpusTask, metrics: Iterable[str] | None = None,
                              prefix_tokens: int = VERBMEM_PREFIX_TOKENS,
                              verbmem_max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS,
                              knowmem_max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS, batch_size: int = 16,
                              store: ResultStore | None = None, progress: bool = False) -> dict:
    """VerbMem on the forget texts (as given: the suite passes chunks), KnowMem on the forget and retain QA;
    ``metrics`` picks among ``verbmem_f``, ``knowmem_f``, ``knowmem_r`` (all by default).

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
            model, tokenizer, task.forget, prefix_tokens, verbmem_max_new_tokens, batch_size, store, progress)
    splits = {"knowmem_f": (task.forget_qa, task.forget_qa_icl), "knowmem_r": (task.retain_qa, task.retain_qa_icl)}
    for metric, (qa, shots) in splits.items():
        if metric in wanted:
            per_example[metric] = knowmem(model, tokenizer, qa, shots, knowmem_max_new_tokens, batch_size, store,
                                          progress)
    return {
        "aggregates": {metric: mean_rouge(examples) for metric, examples in per_example.items()},
        "per_example": {metric: [asdict(ex) for ex in examples] for metric, examples in per_example.items()},
        "skipped": skipped,
        "settings": {
            "prefix_tokens": prefix_tokens, "verbmem_max_new_tokens": verbmem_max_new_tokens,
            "knowmem_max_new_tokens": knowmem_max_new_tokens, "knowmem_shots_forget": len(task.forget_qa_icl),
            "knowmem_shots_retain": len(task.retain_qa_icl),
        },
    }
