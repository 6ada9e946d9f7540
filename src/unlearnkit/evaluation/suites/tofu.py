"""The TOFU evaluation suite: plan what the chosen metrics need, run the model once for it, compute the metrics.

Paper: "TOFU: A Task of Fictitious Unlearning for LLMs", Maini et al. 2024, arXiv:2401.06121; the reference
implementation is OpenUnlearning's TOFU evaluator (``configs/eval/tofu.yaml`` and
``configs/eval/tofu_metrics/*.yaml`` in locuslab/open-unlearning). The metrics, which split and answers each reads
and how each is computed, are declared in the metric table (:mod:`unlearnkit.evaluation.metrics.tofu_table`); this
module only plans, scores and computes from it.

Every distinct (question, answer) pair is scored once however many metrics read it (forget_Q_A_Prob,
extraction_strength, exact_memorization and mia_min_k share one pass), and every distinct question is generated
once, from where the scoring pass left it: the gold answer's leading tokens that the model predicts itself are its
greedy answer's first tokens, and only the rest is decoded. The answer's EOS token is scored, as in current
OpenUnlearning (the original TOFU code masked it, ``data/formatting.py``); the splits are never truncated. How a
pair becomes tokens is the formatter's ``tokenization``: ``"joint"`` scores OpenUnlearning's own sequences.

With ``features=FeatureSpec(layer, pool)`` the same pass also pools the hidden states of the representation
splits' answers (eval_forget, eval_retain and holdout (question, answer) pairs), so the representation metrics
need no forward pass of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import Task
from unlearnkit.evaluation.metrics import registry
from unlearnkit.evaluation.metrics.registry import Inputs
from unlearnkit.evaluation.scoring.distributed import world
from unlearnkit.evaluation.scoring.generation import generate_answers, greedy_prefix
from unlearnkit.evaluation.scoring.passes import PairScore, score_pairs
from unlearnkit.evaluation.scoring.pooling import FeatureSpec
from unlearnkit.evaluation.scoring.store import ResultStore, model_fingerprint
from unlearnkit.evaluation.suites.result import EvalResult, check_reference, compute_metrics

# bump when what a stored score or generation holds changes (CHANGELOG.md says what each version changed)
SCORES_VERSION = 6

METRIC_NAMES = registry.names("tofu")
DEFAULT_METRICS = registry.names("tofu", include_opt_in=False)
# representation split → the task field whose (question, answer) pairs are pooled into features
FEATURE_SPLITS = {"forget": "eval_forget", "retain": "eval_retain", "holdout": "holdout"}


def resolve_metrics(metrics: Iterable[str] | None) -> set[str]:
    """The requested metric names plus everything they depend on; all but the opt-in metrics when ``None``."""
    return registry.resolve("tofu", metrics)


class TofuPlan:
    """The pairs and questions the requested metrics need, collected before the model runs."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []
        self.moments: set[tuple[str, str]] = set()  # pairs that also need Min-K%++ next-token moments
        self.questions: list[str] = []
        self.gold: dict[str, str] = {}  # question → its gold answer (how long the generated answer should be)

    def pair(self, question: str, answer: str, moments: bool = False) -> None:
        self.pairs.append((question, answer))
        if moments:
            self.moments.add((question, answer))

    def question(self, question: str, gold_answer: str) -> None:
        self.questions.append(question)
        self.gold.setdefault(question, gold_answer)


def plan_tofu(task: Task, metrics: Iterable[str] | None = None) -> TofuPlan:
    """Every (question, answer) pair to score and every question to answer for ``metrics`` (default: all)."""
    plan = TofuPlan()
    for metric in registry.in_order("tofu", resolve_metrics(metrics)):
        if metric.plan is not None:
            metric.plan(task, plan)
    return plan


def evaluate_tofu(
    model,
    formatter: QAFormatter,
    task: Task,
    reference: dict | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 200,
    metrics: set[str] | None = None,
    progress: bool = True,
    store_root: Path | None = None,
    features: FeatureSpec | None = None,
    share_prompts: bool = True,
    gold_prefix: bool = True,
) -> EvalResult:
    """Evaluate ``model`` on the TOFU metrics of ``task`` (all of :data:`METRIC_NAMES` unless ``metrics``).

    ``reference`` is the retain model's :meth:`EvalResult.reference_stats`; without it ``forget_quality``,
    ``forget_quality_log10`` and ``privleak`` are ``None``. The model runs in eval mode under
    ``torch.inference_mode()`` (its train/eval mode is restored afterwards). ``max_new_tokens`` bounds the greedy
    answers that ROUGE reads: 200, TOFU's and current OpenUnlearning's default (issue #17's side-by-side run; an
    OpenUnlearning ``configs/generation/default.yaml`` of commit 2511c70 set 64: match the version compared with).

    With ``store_root``, scores and generations are kept on disk per model fingerprint
    (:mod:`unlearnkit.evaluation.scoring.store`): an interrupted evaluation resumes where it stopped and a second
    evaluation of the same model only reads. In a ``torch.distributed`` process group the work is shared out across
    processes and every process returns the same result.

    ``features`` also pools, in the same scoring pass, the hidden states of the eval_forget, eval_retain and holdout
    answers (``EvalResult.features``). ``share_prompts=False`` scores every (prompt + answer) sequence whole instead
    of the answers to one question on its prompt's KV cache (:func:`~unlearnkit.evaluation.scoring.passes.score_pairs`).
    With ``gold_prefix`` (the default) greedy generation skips the decoding steps the scoring pass has already
    taken: the leading tokens of the gold answer whose teacher-forced argmax is the gold token are what greedy
    decoding writes (:func:`~unlearnkit.evaluation.scoring.generation.greedy_prefix`), so a model that knows an answer by heart
    is not run for it at all; ``gold_prefix=False`` decodes every answer from its prompt.
    """
    wanted = resolve_metrics(metrics)
    ref = check_reference(reference)
    plan = plan_tofu(task, wanted)
    generation_store = None
    if store_root is not None:
        settings = {"version": SCORES_VERSION, "max_new_tokens": max_new_tokens}
        if not gold_prefix:  # decoding every step may differ in the last bits: its own store
            settings["whole_generation"] = True
        generation_store = ResultStore(store_root, model_fingerprint(model, formatter), "generations", settings,
                                       world()[0])
    scores = _score_planned(model, formatter, task, plan, batch_size, progress, store_root, features, share_prompts)
    known = {}
    if gold_prefix:
        known = {q: greedy_prefix(formatter, q, a, scores[(q, a)]) for q, a in plan.gold.items() if (q, a) in scores}
    generated = (
        generate_answers(model, formatter, plan.questions, max_new_tokens, batch_size, progress=progress,
                         store=generation_store,
                         expected_lengths={q: len(formatter.answer_ids(a)) for q, a in plan.gold.items()},
                         known_prefixes=known)
        if plan.questions
        else []
    )
    inputs = Inputs(task=task, scores=scores, generations=dict(zip(plan.questions, generated)), reference=ref,
                    model=model, formatter=formatter)
    result = compute_metrics("tofu", wanted, inputs)
    if features is not None:
        result.features = {split: np.asarray([scores[(ex.question, ex.answer)].features
                                              for ex in getattr(task, field_name)], dtype=np.float32)
                           for split, field_name in FEATURE_SPLITS.items() if getattr(task, field_name)}
    return result


def _score_planned(model, formatter: QAFormatter, task: Task, plan: TofuPlan, batch_size: int, progress: bool,
                   store_root: Path | None, features: FeatureSpec | None = None,
                   share_prompts: bool = True) -> dict[tuple[str, str], PairScore]:
    """Score every pair once, each with what it needs in the same pass: the pairs some metric asked moments for
    get Min-K%++ moments (in the same batches as the other answers to their questions, so that each prompt runs
    once), the representation splits' answers also get ``features``."""
    need_features: set[tuple[str, str]] = set()
    if features is not None:
        need_features = {(ex.question, ex.answer) for name in FEATURE_SPLITS.values() for ex in getattr(task, name)}
    groups: dict[bool, list[tuple[str, str]]] = {}
    for pair in dict.fromkeys([*plan.pairs, *need_features]):
        groups.setdefault(pair in need_features, []).append(pair)
    scores: dict[tuple[str, str], PairScore] = {}
    for with_features, pairs in sorted(groups.items()):
        spec = features if with_features else None
        store = None
        if store_root is not None:
            settings = {"version": SCORES_VERSION}
            if spec is not None:
                settings["features"] = spec.settings()
            if not share_prompts:  # whole sequences may differ in the last bits: their own store
                settings["whole_sequences"] = True
            store = ResultStore(store_root, model_fingerprint(model, formatter), "scores", settings, world()[0])
        scores.update(score_pairs(model, formatter, pairs, batch_size=batch_size, progress=progress, store=store,
                                  moments=plan.moments & set(pairs), features=spec, share_prompts=share_prompts))
    return scores
