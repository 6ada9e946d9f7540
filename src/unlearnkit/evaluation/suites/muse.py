"""The MUSE evaluation suite on a raw-text task: VerbMem, KnowMem, membership inference and PrivLeak in one result.

Paper: "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", Shi et al. 2024, arXiv:2407.06460;
reference implementation swj0419/muse_bench ``eval.py`` (``eval_model``). The metrics, which data each reads and
how each is computed, are declared in the metric table (:mod:`unlearnkit.evaluation.metrics.muse_table`); this
module chunks the texts, generates (:mod:`unlearnkit.evaluation.suites.muse_generation`, through the engine's one
generation path) and scores what they plan, and computes them.

The per-example statistics are those of :func:`unlearnkit.evaluation.metrics.mia.example_statistics` on the scores of
:func:`unlearnkit.evaluation.scoring.passes.score_texts` (every token after the first of a chunk; one pass feeds all four
statistics, the Min-K%++ moments included). The AUC orientation and the privleak formula are those of the TOFU
suite (OpenUnlearning's): AUC → 1 when the forget chunks look like training data, and
privleak = ((1 − AUC) − (1 − AUC_retain)) / (1 − AUC_retain) × 100,
which is MUSE's (AUC − AUC_retrain) / AUC_retrain × 100 in MUSE's orientation. ``privleak`` needs ``reference``
(the retain model's :meth:`EvalResult.reference_stats`, ``{"mia_min_k_auc": ...}``) and is ``None`` without it;
it is computed by :func:`unlearnkit.evaluation.suites.result.with_reference`, exactly as for TOFU, so a result evaluated
without the reference can be completed later.

Multiple-choice questions (``task.forget_mcq`` / ``retain_mcq``: WMDP, MMLU) are scored as lm-evaluation-harness
scores them (:mod:`unlearnkit.evaluation.scoring.continuations`), each choice after its question's prompt, for the
accuracies of :mod:`unlearnkit.evaluation.metrics.multiple_choice`.

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
from unlearnkit.evaluation.metrics import registry
from unlearnkit.evaluation.metrics.muse import KNOWMEM_MAX_NEW_TOKENS, VERBMEM_MAX_NEW_TOKENS, VERBMEM_PREFIX_TOKENS
from unlearnkit.evaluation.metrics.registry import Inputs
from unlearnkit.evaluation.scoring.continuations import score_continuations
from unlearnkit.evaluation.scoring.distributed import world
from unlearnkit.evaluation.scoring.passes import score_texts
from unlearnkit.evaluation.scoring.pooling import FeatureSpec
from unlearnkit.evaluation.scoring.store import ResultStore, model_fingerprint
from unlearnkit.evaluation.suites.muse_generation import evaluate_muse_generations
from unlearnkit.evaluation.suites.result import EvalResult, check_reference, compute_metrics

# bump when what a stored text score or generation holds changes (CHANGELOG.md says what each version changed)
TEXT_SCORES_VERSION = 2
MUSE_SUITE_METRICS = registry.names("muse")
MUSE_MIA_STATISTICS = tuple(name for name in MUSE_SUITE_METRICS if name.startswith("mia_"))


def resolve_muse_metrics(metrics: Iterable[str] | None) -> set[str]:
    """The requested MUSE metric names plus what they depend on (privleak → mia_min_k); all when ``None``."""
    return registry.resolve("muse", metrics)


class MusePlan:
    """What the wanted metrics need: which generation metrics run, whether (and how) the chunks are scored."""

    def __init__(self) -> None:
        self.generate: list[str] = []
        self.score_chunks = False
        self.moments = False
        self.choices: list[str] = []  # the task's multiple-choice splits to score (forget_mcq, retain_mcq)


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


def _score_choices(model, formatter: QAFormatter, task: CorpusTask, splits: list[str], batch_size: int,
                   progress: bool, store_root: Path | None) -> dict:
    """The scores of every choice of the multiple-choice questions of ``splits`` (lm-evaluation-harness's
    tokenization, :mod:`unlearnkit.evaluation.scoring.continuations`), keyed by (context, continuation)."""
    requests = [(q.context(), c) for split in splits for q in getattr(task, split) for c in q.continuations()]
    store = None
    if store_root is not None:
        store = ResultStore(store_root, model_fingerprint(model, formatter), "choice_scores",
                            {"version": TEXT_SCORES_VERSION}, world()[0])
    return score_continuations(model, formatter, requests, batch_size=batch_size, progress=progress, store=store)


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
    ref = check_reference(reference)
    plan = MusePlan()
    for metric in registry.in_order("muse", wanted):
        if metric.plan is not None:
            metric.plan(task, plan)
    holdout = task.require_holdout() if plan.score_chunks else []
    length = _chunk_length(formatter, chunk_tokens)
    tokenizer = formatter.tokenizer
    forget_chunks = chunk_texts(task.forget, tokenizer, length)
    inputs = Inputs(task=task, reference=ref, model=model, formatter=formatter)
    if plan.generate:
        generation_store = None
        if store_root is not None:
            generation_store = ResultStore(store_root, model_fingerprint(model, formatter), "muse_generations",
                                           {"version": TEXT_SCORES_VERSION}, world()[0])
        muse = evaluate_muse_generations(model, tokenizer, replace(task, forget=forget_chunks), plan.generate,
                                         prefix_tokens, verbmem_max_new_tokens, knowmem_max_new_tokens, batch_size,
                                         generation_store, progress)
        inputs.generations = muse["per_example"]

    pooled = {}
    if plan.score_chunks or features is not None:
        chunks = {"forget": _scorable(formatter, forget_chunks),
                  "holdout": _scorable(formatter, chunk_texts(holdout or task.holdout, tokenizer, length))}
        if features is not None:
            chunks["retain"] = _scorable(formatter, chunk_texts(task.retain, tokenizer, length))
        store = None
        if store_root is not None:
            settings = {"version": TEXT_SCORES_VERSION, "moments": plan.moments}
            if features is not None:
                settings["features"] = features.settings()
            store = ResultStore(store_root, model_fingerprint(model, formatter), "text_scores", settings, world()[0])
        inputs.scores = score_texts(model, formatter, [text for texts in chunks.values() for text in texts],
                                    batch_size=batch_size, progress=progress, store=store, moments=plan.moments,
                                    features=features)
        inputs.texts = {split: chunks[split] for split in ("forget", "holdout")}
        if features is not None:
            pooled = {split: np.asarray([inputs.scores[text].features for text in texts], dtype=np.float32)
                      for split, texts in chunks.items() if texts}
    if plan.choices:
        inputs.scores = {**inputs.scores, **_score_choices(model, formatter, task, plan.choices, batch_size, progress,
                                                           store_root)}
    result = compute_metrics("muse", wanted, inputs)
    result.features = pooled
    return result
