"""The TOFU evaluation suite: plan what the chosen metrics need, run the model once for it, compute the metrics.

Paper: "TOFU: A Task of Fictitious Unlearning for LLMs", Maini et al. 2024, arXiv:2401.06121; the reference
implementation is OpenUnlearning's TOFU evaluator (``configs/eval/tofu.yaml`` and
``configs/eval/tofu_metrics/*.yaml`` in locuslab/open-unlearning). Which split and which answer each metric uses:

=============================  ==================  ===============================================================
metric                         split               pairs scored / text generated
=============================  ==================  ===============================================================
forget_Q_A_Prob                task.eval_forget    (question, answer)
forget_Q_A_ROUGE               task.eval_forget    greedy answer to question vs answer
forget_Truth_Ratio             task.eval_forget    (question, paraphrased_answer) vs (question, perturbed_j)
retain_*                       task.eval_retain    as forget (Truth_Ratio aggregated with ``true_better``)
ra_Q_A_Prob_normalised         task.real_authors   (question, answer) vs (question, perturbed_j)
ra_Q_A_ROUGE                   task.real_authors   greedy answer to question vs answer
ra_Truth_Ratio                 task.real_authors   (question, answer) vs (question, perturbed_j)
wf_*                           task.world_facts    as real authors
extraction_strength            task.eval_forget    (question, answer), without the EOS prediction
exact_memorization             task.eval_forget    (question, answer), without the EOS prediction
mia_min_k                      eval_forget, holdout  (question, answer): AUC of Min-K% (k = 0.4), forget 0 / holdout 1
privleak                       —                   mia_min_k vs the retain model's mia_min_k (see mia.py)
forget_quality                 —                   KS p-value of forget truth ratios vs the retain model's
model_utility                  —                   hmean of the nine retain / ra / wf numbers
=============================  ==================  ===============================================================

Every distinct (question, answer) pair is scored once however many metrics read it (forget_Q_A_Prob,
extraction_strength, exact_memorization and mia_min_k share one pass), and every distinct question is generated
once, from where the scoring pass left it: the gold answer's leading tokens that the model predicts itself are its
greedy answer's first tokens, and only the rest is decoded. Differences from the reference, on purpose: the
answer's EOS token is never masked (see ``data/formatting.py``); the splits are never truncated; a split that is
empty skips its metrics (value ``None``), and ``model_utility`` is ``None`` when any of its nine inputs is missing,
rather than a harmonic mean of fewer.

With ``features=FeatureSpec(layer, pool)`` the same pass also pools the hidden states of the representation
splits' answers (eval_forget, eval_retain and holdout (question, answer) pairs; :mod:`.representation`), so the
representation metrics need no forward pass of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import QAExample, Task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import mia
from unlearnkit.evaluation.metrics import tofu as tofu_metrics
from unlearnkit.evaluation.scoring.distributed import world
from unlearnkit.evaluation.scoring.pooling import FeatureSpec
from unlearnkit.evaluation.suites.result import EvalResult
from unlearnkit.evaluation.scoring.gradients import gradient_norms
from unlearnkit.evaluation.scoring.store import ResultStore, model_fingerprint
from unlearnkit.evaluation.scoring.passes import PairScore, score_pairs
from unlearnkit.evaluation.scoring.generation import generate_answers, greedy_prefix
from unlearnkit.evaluation.metrics.tofu import MODEL_UTILITY_INPUTS, MetricValue

# bump when what a stored score or generation holds changes (2: generation batches by answer length; 3: answers
# scored on their prompt's KV cache, which may change a log-prob in its last bits; 4: pairs with and without
# Min-K%++ moments scored in the same batches; 5: the opening all prompts share runs once, and prompts of different
# lengths share batches, which may change a log-prob in its last bits; 6: the tokens several answers start with run
# once, in levels)
SCORES_VERSION = 6


@dataclass(frozen=True)
class SplitSpec:
    """How one TOFU evaluation split is read: its metric-name prefix, its Task field and its answers."""

    prefix: str
    task_field: str
    truth_correct_field: str  # the "correct" answer of the truth ratio
    normalised_prob: bool  # Q_A_Prob_normalised (ra, wf) instead of Q_A_Prob (forget, retain)
    truth_aggregator: tofu_metrics.TruthRatioAggregator

    @property
    def prob_metric(self) -> str:
        return f"{self.prefix}_Q_A_Prob_normalised" if self.normalised_prob else f"{self.prefix}_Q_A_Prob"

    @property
    def rouge_metric(self) -> str:
        return f"{self.prefix}_Q_A_ROUGE"

    @property
    def truth_metric(self) -> str:
        return f"{self.prefix}_Truth_Ratio"


SPLITS = (
    SplitSpec("forget", "eval_forget", "paraphrased_answer", False, "closer_to_1_better"),
    SplitSpec("retain", "eval_retain", "paraphrased_answer", False, "true_better"),
    SplitSpec("ra", "real_authors", "answer", True, "true_better"),
    SplitSpec("wf", "world_facts", "answer", True, "true_better"),
)

MEMORIZATION_METRICS = ("extraction_strength", "exact_memorization")
DERIVED_DEPENDENCIES = {
    "forget_quality": ("forget_Truth_Ratio",),
    "forget_quality_log10": ("forget_quality", "forget_Truth_Ratio"),
    "model_utility": MODEL_UTILITY_INPUTS,
    "privleak": ("mia_min_k",),
    "mia_reference": ("mia_loss",),
}
# Membership inference, forget vs holdout: metric name -> statistic of mia.example_statistics (AUC aggregate)
MIA_STATISTICS = {"mia_loss": "loss", "mia_zlib": "zlib", "mia_min_k": "min_k", "mia_min_k_plus_plus": "min_k_plus_plus",
                  "mia_reference": "reference"}
OPT_IN_METRICS = ("mia_gradnorm",)  # one backward pass per example: only when asked for by name
METRIC_NAMES = (
    tuple(name for s in SPLITS for name in (s.prob_metric, s.rouge_metric, s.truth_metric))
    + MEMORIZATION_METRICS
    + tuple(MIA_STATISTICS)
    + OPT_IN_METRICS
    + tuple(DERIVED_DEPENDENCIES)
)
DEFAULT_METRICS = tuple(name for name in METRIC_NAMES if name not in OPT_IN_METRICS)
# representation split → the task field whose (question, answer) pairs are pooled into features
FEATURE_SPLITS = {"forget": "eval_forget", "retain": "eval_retain", "holdout": "holdout"}
REFERENCE_KEYS = ("forget_truth_ratios", "mia_min_k_auc", "mia_loss_forget", "mia_loss_holdout")


def resolve_metrics(metrics: Iterable[str] | None) -> set[str]:
    """The requested metric names plus everything they depend on; all metrics when ``metrics`` is None."""
    if metrics is None:
        return set(DEFAULT_METRICS)
    wanted = set(metrics)
    unknown = sorted(wanted - set(METRIC_NAMES))
    if unknown:
        raise UnlearnkitError(f"unknown TOFU metric(s) {unknown}: choose from {', '.join(METRIC_NAMES)}")
    pending = list(wanted)
    while pending:
        for dependency in DERIVED_DEPENDENCIES.get(pending.pop(), ()):
            if dependency not in wanted:
                wanted.add(dependency)
                pending.append(dependency)
    return wanted


def _check_reference(reference: dict | None) -> dict:
    if reference is None:
        return {}
    if not isinstance(reference, dict):
        raise UnlearnkitError("reference must be a dict: pass EvalResult.reference_stats() of the retain model")
    unknown = sorted(set(reference) - set(REFERENCE_KEYS))
    if unknown:
        raise UnlearnkitError(
            f"reference has unknown keys {unknown}: pass EvalResult.reference_stats() of the retain model "
            f"(keys {', '.join(REFERENCE_KEYS)})"
        )
    return reference


def _truth_correct(example: QAExample, spec: SplitSpec) -> str | None:
    return getattr(example, spec.truth_correct_field)


class TofuPlan:
    """The pairs and questions the requested metrics need, collected before the model runs."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []
        self.questions: list[str] = []
        self.gold: dict[str, str] = {}  # question → its gold answer (how long the generated answer should be)

    def pair(self, question: str, answer: str) -> None:
        self.pairs.append((question, answer))


def plan_tofu(task: Task, metrics: Iterable[str] | None = None) -> TofuPlan:
    """Every (question, answer) pair to score and every question to answer for ``metrics`` (default: all)."""
    wanted = resolve_metrics(metrics)
    plan = TofuPlan()
    for spec in SPLITS:
        examples: list[QAExample] = getattr(task, spec.task_field)
        for ex in examples:
            if spec.prob_metric in wanted:
                plan.pair(ex.question, ex.answer)
                if spec.normalised_prob:
                    for wrong in ex.perturbed_answers:
                        plan.pair(ex.question, wrong)
            if spec.truth_metric in wanted and _truth_correct(ex, spec) is not None and ex.perturbed_answers:
                plan.pair(ex.question, _truth_correct(ex, spec))
                for wrong in ex.perturbed_answers:
                    plan.pair(ex.question, wrong)
            if spec.rouge_metric in wanted:
                plan.questions.append(ex.question)
                plan.gold.setdefault(ex.question, ex.answer)
    mia_wanted = wanted & {*MIA_STATISTICS, *OPT_IN_METRICS}
    if wanted & {*MEMORIZATION_METRICS, *mia_wanted}:
        plan.pairs += [(ex.question, ex.answer) for ex in task.eval_forget]
    if mia_wanted:
        plan.pairs += [(ex.question, ex.answer) for ex in task.holdout]
    return plan


def _split_metrics(
    spec: SplitSpec,
    examples: list[QAExample],
    scores: dict[tuple[str, str], PairScore],
    generations: dict[str, str],
    wanted: set[str],
) -> dict[str, MetricValue]:
    out: dict[str, MetricValue] = {}
    if not examples:
        return out
    def wrong_answers(ex: QAExample) -> list[PairScore]:
        return [scores[(ex.question, w)] for w in ex.perturbed_answers]

    if spec.prob_metric in wanted:
        answers = [scores[(ex.question, ex.answer)] for ex in examples]
        if spec.normalised_prob:
            wrongs = [wrong_answers(ex) for ex in examples]
            out[spec.prob_metric] = tofu_metrics.normalised_answer_probability(answers, wrongs)
        else:
            out[spec.prob_metric] = tofu_metrics.answer_probability(answers)
    if spec.truth_metric in wanted:
        # an example without a correct answer or without perturbed answers was not planned: its ratio is None
        usable = [_truth_correct(ex, spec) is not None and bool(ex.perturbed_answers) for ex in examples]
        correct = [scores[(ex.question, _truth_correct(ex, spec))] if ok else None for ex, ok in zip(examples, usable)]
        wrongs = [wrong_answers(ex) if ok else [] for ex, ok in zip(examples, usable)]
        out[spec.truth_metric] = tofu_metrics.truth_ratio(correct, wrongs, spec.truth_aggregator)
    if spec.rouge_metric in wanted:
        out[spec.rouge_metric] = tofu_metrics.rouge_l_recall(
            [generations[ex.question] for ex in examples], [ex.answer for ex in examples]
        )
    return out


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
    answers that ROUGE reads (TOFU's 200; OpenUnlearning's ``configs/generation/default.yaml`` sets 64, pass
    that to match its ROUGE numbers).

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
    ref = _check_reference(reference)
    plan = plan_tofu(task, wanted)
    generation_store = None
    if store_root is not None:
        rank = world()[0]
        fingerprint = model_fingerprint(model, formatter)
        settings = {"version": SCORES_VERSION, "max_new_tokens": max_new_tokens}
        if not gold_prefix:  # decoding every step may differ in the last bits: its own store
            settings["whole_generation"] = True
        generation_store = ResultStore(store_root, fingerprint, "generations", settings, rank)
    scores = _score_planned(model, formatter, task, plan, wanted, batch_size, progress, store_root, features,
                            share_prompts)
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
    generations = dict(zip(plan.questions, generated))

    values: dict[str, MetricValue] = {}
    result_generations: dict[str, list[str]] = {}
    for spec in SPLITS:
        examples = getattr(task, spec.task_field)
        values.update(_split_metrics(spec, examples, scores, generations, wanted))
        if spec.rouge_metric in wanted and examples:
            result_generations[spec.prefix] = [generations[ex.question] for ex in examples]

    forget_answers = [scores[(ex.question, ex.answer)] for ex in task.eval_forget] if task.eval_forget else []
    if forget_answers and "exact_memorization" in wanted:
        values["exact_memorization"] = tofu_metrics.exact_memorization(forget_answers)
    if forget_answers and "extraction_strength" in wanted:
        values["extraction_strength"] = tofu_metrics.extraction_strength(forget_answers)

    aggregates: dict[str, float | None] = {name: None for name in METRIC_NAMES if name in wanted}
    per_example: dict[str, list] = {}
    for name, value in values.items():
        aggregates[name] = value.aggregate
        per_example[name] = value.per_example

    if wanted & {*MIA_STATISTICS, *OPT_IN_METRICS} and forget_answers and task.holdout:
        per_example.update(_mia_statistics(model, formatter, task, scores, wanted))
        for metric in (*MIA_STATISTICS, *OPT_IN_METRICS):
            if metric in wanted and f"{metric}_forget" in per_example:
                aggregates[metric] = mia.mia_auc(per_example[f"{metric}_forget"], per_example[f"{metric}_holdout"])
    reference_aggregates, reference_per_example = _reference_aggregates(aggregates, per_example, ref, wanted)
    aggregates.update(reference_aggregates)
    per_example.update(reference_per_example)
    if "model_utility" in wanted:
        aggregates["model_utility"] = tofu_metrics.model_utility(aggregates)
    pooled = {}
    if features is not None:
        pooled = {split: np.asarray([scores[(ex.question, ex.answer)].features for ex in getattr(task, field_name)],
                                    dtype=np.float32)
                  for split, field_name in FEATURE_SPLITS.items() if getattr(task, field_name)}
    return EvalResult(aggregates, per_example, result_generations, features=pooled)


def _score_planned(model, formatter: QAFormatter, task: Task, plan: TofuPlan, wanted: set[str], batch_size: int,
                   progress: bool, store_root: Path | None,
                   features: FeatureSpec | None = None, share_prompts: bool = True) -> dict[tuple[str, str], PairScore]:
    """Score every pair once, each with what it needs in the same pass: the forget and holdout answers also get
    Min-K%++ moments when that is wanted (in the same batches as the other answers to their questions, so that each
    prompt runs once), the representation splits' answers also get ``features``."""
    need_moments: set[tuple[str, str]] = set()
    if "mia_min_k_plus_plus" in wanted:
        need_moments = {(ex.question, ex.answer) for ex in (*task.eval_forget, *task.holdout)}
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
                                  moments=need_moments & set(pairs), features=spec, share_prompts=share_prompts))
    return scores


def _mia_statistics(model, formatter: QAFormatter, task: Task, scores: dict, wanted: set[str]) -> dict[str, list]:
    """Per-example membership statistics of the forget and holdout answers: ``<metric>_forget``, ``<metric>_holdout``."""
    out: dict[str, list] = {}
    for split, examples in (("forget", task.eval_forget), ("holdout", task.holdout)):
        split_scores = [scores[(ex.question, ex.answer)] for ex in examples]
        stats = [mia.example_statistics(s.token_logprobs, s.ends_with_eos, text=ex.answer, mu=s.token_mu,
                                        sigma=s.token_sigma) for ex, s in zip(examples, split_scores)]
        for metric, statistic in MIA_STATISTICS.items():
            if metric in wanted and statistic in stats[0]:
                out[f"{metric}_{split}"] = [st[statistic] for st in stats]
        if "mia_gradnorm" in wanted:
            out[f"mia_gradnorm_{split}"] = gradient_norms(model, formatter, [(ex.question, ex.answer) for ex in examples])
    return out


def _reference_aggregates(aggregates: dict, per_example: dict, ref: dict, wanted: set[str]) -> tuple[dict, dict]:
    """The metrics that compare with the retain model: forget_quality(_log10), privleak and the reference-model MIA.

    mia_reference per example is ℓ̄_model − ℓ̄_retain (mia.reference_score) from the two models' per-example losses.
    """
    out: dict[str, float | None] = {name: None for name in ("forget_quality", "forget_quality_log10", "privleak",
                                                             "mia_reference") if name in wanted}
    examples: dict[str, list] = {}
    if "mia_reference" in wanted and "mia_loss_forget" in per_example and "mia_loss_forget" in ref:
        for split in ("forget", "holdout"):
            examples[f"mia_reference_{split}"] = [a - b for a, b in zip(per_example[f"mia_loss_{split}"],
                                                                         ref[f"mia_loss_{split}"])]
        out["mia_reference"] = mia.mia_auc(examples["mia_reference_forget"], examples["mia_reference_holdout"])
    if "privleak" in wanted and aggregates.get("mia_min_k") is not None and "mia_min_k_auc" in ref:
        out["privleak"] = mia.privleak(aggregates["mia_min_k"], float(ref["mia_min_k_auc"]))
    if "forget_quality" in wanted and "forget_truth_ratios" in ref:
        ratios = [r for r in per_example.get("forget_Truth_Ratio", []) if r is not None]
        out["forget_quality"] = tofu_metrics.forget_quality(ratios, ref["forget_truth_ratios"])
    if "forget_quality_log10" in wanted and out.get("forget_quality") is not None:
        p = out["forget_quality"]
        out["forget_quality_log10"] = math.log10(p) if p > 0 else float("-inf")
    return out, examples


def with_reference(result: EvalResult, reference: dict | None) -> EvalResult:
    """``result`` with forget_quality, forget_quality_log10 and privleak recomputed against ``reference``.

    For results computed (or cached) without the retain model's statistics: no model runs, the comparisons are
    pure functions of the stored per-example truth ratios and Min-K% AUC. Only the metrics ``result`` has keys
    for are filled in; ``reference=None`` sets them to ``None``.
    """
    ref = _check_reference(reference)
    aggregates = dict(result.aggregates)
    reference_aggregates, reference_per_example = _reference_aggregates(aggregates, result.per_example, ref,
                                                                        set(aggregates))
    aggregates.update(reference_aggregates)
    return EvalResult(aggregates, {**result.per_example, **reference_per_example}, dict(result.generations),
                      features=result.features)
