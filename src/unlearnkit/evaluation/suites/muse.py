"""The MUSE evaluation suite on a raw-text task: VerbMem, KnowMem, membership inference and PrivLeak in one result.

Paper: "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", Shi et al. 2024, arXiv:2407.06460;
reference implementation swj0419/muse_bench ``eval.py`` (``eval_model``). Which data each metric reads:

=====================  =============================  ===============================================================
metric                 data                           value
=====================  =============================  ===============================================================
verbmem_f              forget chunks                  mean ROUGE-L F1 of the greedy continuation of each chunk's
                                                      prefix (:func:`unlearnkit.evaluation.metrics.muse.verbmem`)
knowmem_f              task.forget_qa (+ its shots)   mean ROUGE-L F1 of the few-shot greedy answers
knowmem_r              task.retain_qa (+ its shots)   as knowmem_f
mia_loss               forget vs holdout chunks       ROC AUC of the mean NLL of each chunk (forget 0, holdout 1)
mia_zlib               forget vs holdout chunks       ROC AUC of mean NLL / zlib length of the chunk's text
mia_min_k              forget vs holdout chunks       ROC AUC of Min-K% (k = 0.4, MUSE's ``forget_holdout_Min-40%``)
mia_min_k_plus_plus    forget vs holdout chunks       ROC AUC of Min-K%++ (k = 0.4)
privleak               —                              mia_min_k against the retain model's (:func:`mia.privleak`)
=====================  =============================  ===============================================================

The per-example statistics are those of :func:`unlearnkit.evaluation.metrics.mia.example_statistics` on the scores of
:func:`unlearnkit.evaluation.scoring.passes.score_texts` (every token after the first of a chunk; one pass feeds all four
statistics, the Min-K%++ moments included). The AUC orientation and the privleak formula are those of the TOFU
suite (OpenUnlearning's): AUC → 1 when the forget chunks look like training data, and
privleak = ((1 − AUC) − (1 − AUC_retain)) / (1 − AUC_retain) × 100,
which is MUSE's (AUC − AUC_retrain) / AUC_retrain × 100 in MUSE's orientation. ``privleak`` needs ``reference``
(the retain model's :meth:`EvalResult.reference_stats`, ``{"mia_min_k_auc": ...}``) and is ``None`` without it;
it is computed by :func:`unlearnkit.evaluation.suites.tofu.with_reference`, exactly as for TOFU, so a result evaluated
without the reference can be completed later.

Chunking: the forget and holdout texts are cut with :func:`unlearnkit.data.corpus.chunk_texts` into windows of
``chunk_tokens`` tokens (default: the formatter's ``max_length`` minus the special tokens the tokenizer adds, so a
chunk is scored whole). MUSE evaluates fixed-length windows of its corpora (its ``privleak`` and ``verbmem`` files
hold texts of at most 2048 Llama tokens); the window length here is a reconstruction that follows the model's
context setting. Re-tokenizing a chunk can give a token or two more than ``chunk_tokens`` (a BPE merges
differently at the cut); :func:`score_texts` truncates those to ``max_length``. A chunk that encodes to fewer than
two tokens has nothing to score and is left out of the membership statistics (VerbMem skips chunks of at most
``prefix_tokens`` tokens itself). The retain texts are read by no metric here (MUSE's utility is ``knowmem_r``).

Differences from the reference, on purpose: MUSE reports VerbMem and KnowMem ×100, here they are in [0, 1]; MUSE's
PrivLeak uses a fixed retrained-model AUC per corpus, here the retain model's own AUC on the same chunks.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np

from unlearnkit.data.corpus import CorpusTask, chunk_texts
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import mia
from unlearnkit.evaluation.scoring.distributed import world
from unlearnkit.evaluation.scoring.pooling import FeatureSpec
from unlearnkit.evaluation.metrics.muse import (
    KNOWMEM_MAX_NEW_TOKENS,
    MUSE_METRICS,
    VERBMEM_MAX_NEW_TOKENS,
    VERBMEM_PREFIX_TOKENS,
    evaluate_muse,
)
from unlearnkit.evaluation.scoring.store import ResultStore, model_fingerprint
from unlearnkit.evaluation.scoring.passes import PairScore, score_texts
from unlearnkit.evaluation.suites.result import EvalResult
from unlearnkit.evaluation.suites.tofu import with_reference

TEXT_SCORES_VERSION = 1  # bump when what a stored text score holds changes
# metric name -> statistic of mia.example_statistics (AUC of forget vs holdout chunks)
MUSE_MIA_STATISTICS = {"mia_loss": "loss", "mia_zlib": "zlib", "mia_min_k": "min_k",
                       "mia_min_k_plus_plus": "min_k_plus_plus"}
MUSE_SUITE_METRICS = (*MUSE_METRICS, *MUSE_MIA_STATISTICS, "privleak")
MUSE_DEPENDENCIES = {"privleak": ("mia_min_k",)}


def resolve_muse_metrics(metrics: Iterable[str] | None) -> set[str]:
    """The requested MUSE metric names plus what they depend on (privleak → mia_min_k); all when ``None``."""
    if metrics is None:
        return set(MUSE_SUITE_METRICS)
    wanted = set(metrics)
    unknown = sorted(wanted - set(MUSE_SUITE_METRICS))
    if unknown:
        raise UnlearnkitError(f"unknown MUSE metric(s) {unknown}: choose from {', '.join(MUSE_SUITE_METRICS)}")
    for metric in list(wanted):
        wanted.update(MUSE_DEPENDENCIES.get(metric, ()))
    return wanted


def default_chunk_tokens(formatter: QAFormatter) -> int:
    """The longest window whose tokens, with the tokenizer's special tokens, fit in ``formatter.max_length``."""
    return formatter.text_window()


def _chunk_length(formatter: QAFormatter, chunk_tokens: int | None) -> int:
    limit = default_chunk_tokens(formatter)
    if chunk_tokens is None:
        chunk_tokens = limit
    if chunk_tokens < 1:
        raise UnlearnkitError(f"chunk_tokens must be at least 1, got {chunk_tokens}: pass a positive window length "
                              "(or raise the formatter's max_length)")
    if chunk_tokens > limit:
        raise UnlearnkitError(f"chunk_tokens={chunk_tokens} does not fit the formatter's max_length="
                              f"{formatter.max_length} with special tokens: pass chunk_tokens <= {limit} or raise "
                              "max_length")
    return chunk_tokens


def _scorable(formatter: QAFormatter, chunks: list[str]) -> list[str]:
    """The chunks that encode (with special tokens) to at least two tokens: one to condition on, one to score."""
    return [chunk for chunk in chunks if len(formatter.tokenizer(chunk)["input_ids"]) >= 2]


def _membership(scores: dict[str, PairScore], chunks: dict[str, list[str]], wanted: set[str]) -> dict[str, list]:
    """Per-chunk statistics of the wanted MIA metrics: ``<metric>_forget`` and ``<metric>_holdout``."""
    out: dict[str, list] = {}
    for split, texts in chunks.items():
        stats = [mia.example_statistics(scores[t].token_logprobs, scores[t].ends_with_eos, text=t,
                                        mu=scores[t].token_mu, sigma=scores[t].token_sigma) for t in texts]
        for metric, statistic in MUSE_MIA_STATISTICS.items():
            if metric in wanted:
                out[f"{metric}_{split}"] = [st[statistic] for st in stats]
    return out


def evaluate_muse_suite(
    model,
    formatter: QAFormatter,
    task: CorpusTask,
    reference: dict | None = None,
    metrics: Iterable[str] | None = None,
    chunk_tokens: int | None = None,
    batch_size: int = 16,
    prefix_tokens: int = VERBMEM_PREFIX_TOKENS,
    verbmem_max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS,
    knowmem_max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS,
    progress: bool = True,
    store_root: Path | None = None,
    features: FeatureSpec | None = None,
) -> EvalResult:
    """Evaluate ``model`` on the MUSE metrics of ``task`` (all of :data:`MUSE_SUITE_METRICS` unless ``metrics``).

    Returns an :class:`EvalResult` (the TOFU suite's, so intervals, caching and reports read it the same way):
    ``aggregates`` holds every wanted metric (``None`` for an empty split, and for privleak without a reference);
    ``per_example`` holds the ROUGE-L F1 list of ``verbmem_f`` / ``knowmem_f`` / ``knowmem_r`` and, for each MIA
    metric, ``<metric>_forget`` and ``<metric>_holdout`` (one statistic per chunk); ``generations`` holds the
    generations of ``verbmem_f`` / ``knowmem_f`` / ``knowmem_r``, in the order of the per-example lists.

    Any MIA metric or privleak needs holdout texts: without them :meth:`CorpusTask.require_holdout` raises.
    ``store_root`` keeps the chunk scores and the generations on disk per model fingerprint as
    :func:`~unlearnkit.evaluation.suites.tofu.evaluate_tofu` does (an interrupted evaluation resumes, a repeated one only
    reads); in a process group the scoring and the generation are shared out across processes.

    ``features`` (pool ``"all"``) also pools, in the same scoring pass, the hidden states of the forget, retain and
    holdout chunks (``EvalResult.features``, the representation metrics' input).
    """
    wanted = resolve_muse_metrics(metrics)
    mia_wanted = wanted & set(MUSE_MIA_STATISTICS)
    holdout = task.require_holdout() if mia_wanted else []
    length = _chunk_length(formatter, chunk_tokens)
    tokenizer = formatter.tokenizer
    forget_chunks = chunk_texts(task.forget, tokenizer, length)

    aggregates: dict[str, float | None] = {name: None for name in MUSE_SUITE_METRICS if name in wanted}
    per_example: dict[str, list] = {}
    generations: dict[str, list[str]] = {}
    generation_metrics = [name for name in MUSE_METRICS if name in wanted]
    if generation_metrics:
        generation_store = None
        if store_root is not None:
            generation_store = ResultStore(store_root, model_fingerprint(model, formatter), "muse_generations",
                                           {"version": TEXT_SCORES_VERSION}, world()[0])
        muse = evaluate_muse(model, tokenizer, replace(task, forget=forget_chunks), generation_metrics,
                             prefix_tokens, verbmem_max_new_tokens, knowmem_max_new_tokens, batch_size,
                             generation_store)
        aggregates.update(muse["aggregates"])
        for name, examples in muse["per_example"].items():
            per_example[name] = [ex["rougeL_f1"] for ex in examples]
            generations[name] = [ex["generation"] for ex in examples]

    pooled = {}
    if mia_wanted or features is not None:
        chunks = {"forget": _scorable(formatter, forget_chunks),
                  "holdout": _scorable(formatter, chunk_texts(holdout or task.holdout, tokenizer, length))}
        if features is not None:
            chunks["retain"] = _scorable(formatter, chunk_texts(task.retain, tokenizer, length))
        moments = "mia_min_k_plus_plus" in wanted
        store = None
        if store_root is not None:
            settings = {"version": TEXT_SCORES_VERSION, "moments": moments}
            if features is not None:
                settings["features"] = features.settings()
            store = ResultStore(store_root, model_fingerprint(model, formatter), "text_scores", settings, world()[0])
        scores = score_texts(model, formatter, [text for texts in chunks.values() for text in texts],
                             batch_size=batch_size, progress=progress, store=store, moments=moments, features=features)
        if mia_wanted:
            per_example.update(_membership(scores, {split: chunks[split] for split in ("forget", "holdout")},
                                           mia_wanted))
        for metric in mia_wanted:
            aggregates[metric] = mia.mia_auc(per_example[f"{metric}_forget"], per_example[f"{metric}_holdout"])
        if features is not None:
            pooled = {split: np.asarray([scores[text].features for text in texts], dtype=np.float32)
                      for split, texts in chunks.items() if texts}
    return with_reference(EvalResult(aggregates, per_example, generations, features=pooled), reference)
