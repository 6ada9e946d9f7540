"""MUSE's generation metrics on a raw-text task, VerbMem (verbatim memorisation) and KnowMem (knowledge): their
prompts, references and scores. Pure functions: the suite generates
(:mod:`unlearnkit.evaluation.suites.muse_generation`).

Paper: "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", Shi et al. 2024, arXiv:2407.06460.
Reference implementation: swj0419/muse_bench, ``metrics/verbmem.py``, ``metrics/knowmem.py`` and
``metrics/logger.py`` (``RougeEvalLogger``), ``eval.py`` (defaults: 128 new tokens for VerbMem, 32 for KnowMem,
aggregate ``mean_rougeL``). Both metrics score a greedy generation with ROUGE-L F1 (:func:`rouge_l_f1`) and
aggregate by the mean over examples. Values here are in [0, 1]; MUSE's ``eval_model`` reports them ×100.

- **VerbMem** (forget texts, :func:`verbmem_prompts`, :func:`verbmem_examples`): prompt = the first
  ``prefix_tokens`` tokens of a forget text, preceded by the special tokens the tokenizer puts in front of a text
  (e.g. BOS); reference = the next ``max_new_tokens`` tokens of the same text, decoded.
  VerbMem = mean_x ROUGE-L-F1(generation(x[:l]), x[l:l+n]).
  The reference ships the prompt and the continuation as text and re-tokenizes the continuation with BOS before
  keeping its first 128 tokens (so 127 text tokens under a BOS tokenizer); here both come from one tokenization
  of the text and the continuation is exactly ``max_new_tokens`` text tokens. Texts with at most
  ``prefix_tokens`` tokens have no continuation: they are skipped and counted (``skipped``), and it is an error
  when every forget text is skipped. Cut long texts first (:meth:`CorpusTask.chunked`) to score each window.
  The reference's data files hold the prompts as text, so its code does not fix their length; the default of 32
  tokens is the project's spec (research/metrics.md §3, after the paper) and a reconstruction.
- **KnowMem** (forget and retain QA, :func:`knowmem_prompts`, :func:`knowmem_examples`): prompt = the few-shot
  examples, each ``"Question: {q}\\nAnswer: {a}\\n\\n"``, followed by ``"Question: {q}\\nAnswer: "``
  (:func:`knowmem_prompt`), tokenized with the tokenizer's special tokens as the reference does. The generation is
  cut before the first of ``"\\n\\n"``, ``"\\nQuestion"`` and ``"Question:"`` (:func:`cut_at_stop_strings`), then
  scored against the answer. The reference uses every example of its ``*_qa_icl`` file as a shot; so does this
  module (no shots = zero-shot prompts).

The generations these functions score are greedy continuations of the prompts, decoded up to the first end token
with ``skip_special_tokens=True`` and ``clean_up_tokenization_spaces=True`` as in the reference, and not stripped:
the text is stripped only after the stop-string cut (ROUGE ignores whitespace, so the score is the reference's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rouge_score import rouge_scorer

from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError

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


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=True)


def verbmem_prompts(tokenizer, texts: Sequence[str], prefix_tokens: int = VERBMEM_PREFIX_TOKENS,
                    max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS
                    ) -> tuple[list[list[int]], list[str], list[str], int]:
    """VerbMem's inputs (see the module docstring): ``(prompts, prefixes, references, skipped)`` — for each text
    longer than ``prefix_tokens`` tokens, the prompt's token ids, its prefix as text and the reference
    continuation; and how many texts were too short. Raises when every one of a non-empty ``texts`` is."""
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
    if texts and not prompts:
        raise UnlearnkitError(f"none of the {len(texts)} forget texts is longer than prefix_tokens={prefix_tokens} "
                              "tokens, so VerbMem has nothing to continue: lower prefix_tokens or use longer texts")
    return prompts, prefixes, references, len(texts) - len(prompts)


def verbmem_examples(prefixes: Sequence[str], references: Sequence[str],
                     generations: Sequence[str]) -> list[MuseExample]:
    """VerbMem per text: each generation (the decoded continuation of its prompt) scored against its reference."""
    return [MuseExample(prefix, reference, generation.strip(), rouge_l_f1(reference, generation))
            for prefix, reference, generation in zip(prefixes, references, generations, strict=True)]


def knowmem_prompts(tokenizer, qa: Sequence[QAExample],
                    shots: Sequence[QAExample] = ()) -> tuple[list[str], list[list[int]]]:
    """KnowMem's prompts for ``qa`` with ``shots`` as few-shot examples: the texts and their token ids (with the
    tokenizer's special tokens, as the reference tokenizes them)."""
    prompts = [knowmem_prompt(ex.question, shots) for ex in qa]
    return prompts, [list(tokenizer(prompt)["input_ids"]) for prompt in prompts]


def knowmem_examples(prompts: Sequence[str], qa: Sequence[QAExample],
                     generations: Sequence[str]) -> list[MuseExample]:
    """KnowMem per question: each generation cut at the stop strings, then scored against the answer."""
    examples = []
    for prompt, ex, generation in zip(prompts, qa, generations, strict=True):
        answer = cut_at_stop_strings(generation)
        examples.append(MuseExample(prompt, ex.answer, answer.strip(), rouge_l_f1(ex.answer, answer)))
    return examples


def mean_rouge(examples: Sequence[MuseExample]) -> float | None:
    """The mean ROUGE-L F1 of ``examples`` (MUSE's ``mean_rougeL``); None for none."""
    return sum(ex.rougeL_f1 for ex in examples) / len(examples) if examples else None
