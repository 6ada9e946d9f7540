"""The TOFU suite's metrics, declared (:mod:`.registry`): which split and answers each reads, how it is computed.

Paper: "TOFU: A Task of Fictitious Unlearning for LLMs", Maini et al. 2024, arXiv:2401.06121; which split and which
answer each metric uses follows OpenUnlearning's ``configs/eval/tofu_metrics/*.yaml``:

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
forget_quality                 —                   KS p-value of forget truth ratios vs the retain model's
model_utility                  —                   hmean of the nine retain / ra / wf numbers
=============================  ==================  ===============================================================

Membership inference, forget vs holdout (question, answer) pairs, each an ROC AUC with forget = 0 and holdout = 1
(formulas and sources in :mod:`.mia`): ``mia_loss``, ``mia_zlib``, ``mia_min_k`` (k = 0.4), ``mia_min_k_plus_plus``
(its pairs also get the next-token moments in the scoring pass), ``mia_reference`` (against the retain model's
losses), ``mia_gradnorm`` (opt-in: a backward pass per example); ``privleak`` compares ``mia_min_k`` with the retain
model's.

OpenUnlearning's further TOFU metrics (the PARA / PERT probabilities and ROUGE, retain_extraction_strength and the
opt-in gibberish score) are declared in :mod:`.tofu_table_extra`.

The formulas are in :mod:`.tofu` and :mod:`.mia`. A split
that is empty skips its metrics (value ``None``); ``model_utility`` is ``None`` when any of its nine inputs is
missing, rather than a harmonic mean of fewer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from unlearnkit.data.types import QAExample
from unlearnkit.evaluation.metrics import mia, tofu
from unlearnkit.evaluation.metrics.registry import Computed, Inputs, Metric, register


@dataclass(frozen=True)
class SplitSpec:
    """How one TOFU evaluation split is read: its metric-name prefix, its Task field and its answers."""

    prefix: str
    task_field: str
    truth_correct_field: str  # the "correct" answer of the truth ratio
    normalised_prob: bool  # Q_A_Prob_normalised (ra, wf) instead of Q_A_Prob (forget, retain)
    truth_aggregator: tofu.TruthRatioAggregator
    title: str


SPLITS = (
    SplitSpec("forget", "eval_forget", "paraphrased_answer", False, "closer_to_1_better", "the forget set"),
    SplitSpec("retain", "eval_retain", "paraphrased_answer", False, "true_better", "the retain set"),
    SplitSpec("ra", "real_authors", "answer", True, "true_better", "real authors"),
    SplitSpec("wf", "world_facts", "answer", True, "true_better", "world facts"),
)


def _examples(task, spec: SplitSpec) -> list[QAExample]:
    return getattr(task, spec.task_field)


def _truth_usable(ex: QAExample, spec: SplitSpec) -> bool:
    return getattr(ex, spec.truth_correct_field) is not None and bool(ex.perturbed_answers)


def _declare_split(spec: SplitSpec) -> None:
    forget = spec.prefix == "forget"
    prob_name = f"{spec.prefix}_Q_A_Prob" + ("_normalised" if spec.normalised_prob else "")

    def plan_prob(task, plan) -> None:
        for ex in _examples(task, spec):
            plan.pair(ex.question, ex.answer)
            if spec.normalised_prob:
                for wrong in ex.perturbed_answers:
                    plan.pair(ex.question, wrong)

    def compute_prob(inputs: Inputs) -> Computed:
        examples = _examples(inputs.task, spec)
        if not examples:
            return Computed(None)
        answers = [inputs.scores[(ex.question, ex.answer)] for ex in examples]
        if spec.normalised_prob:
            wrongs = [[inputs.scores[(ex.question, w)] for w in ex.perturbed_answers] for ex in examples]
            value = tofu.normalised_answer_probability(answers, wrongs)
        else:
            value = tofu.answer_probability(answers)
        return Computed(value.aggregate, {prob_name: value.per_example})

    def plan_truth(task, plan) -> None:
        for ex in _examples(task, spec):
            if _truth_usable(ex, spec):
                plan.pair(ex.question, getattr(ex, spec.truth_correct_field))
                for wrong in ex.perturbed_answers:
                    plan.pair(ex.question, wrong)

    def compute_truth(inputs: Inputs) -> Computed:
        examples = _examples(inputs.task, spec)
        if not examples:
            return Computed(None)
        # an example without a correct answer or without perturbed answers was not planned: its ratio is None
        usable = [_truth_usable(ex, spec) for ex in examples]
        correct = [inputs.scores[(ex.question, getattr(ex, spec.truth_correct_field))] if ok else None
                   for ex, ok in zip(examples, usable)]
        wrongs = [[inputs.scores[(ex.question, w)] for w in ex.perturbed_answers] if ok else []
                  for ex, ok in zip(examples, usable)]
        value = tofu.truth_ratio(correct, wrongs, spec.truth_aggregator)
        return Computed(value.aggregate, {f"{spec.prefix}_Truth_Ratio": value.per_example})

    def plan_rouge(task, plan) -> None:
        for ex in _examples(task, spec):
            plan.question(ex.question, ex.answer)

    def compute_rouge(inputs: Inputs) -> Computed:
        examples = _examples(inputs.task, spec)
        if not examples:
            return Computed(None)
        generated = [inputs.generations[ex.question] for ex in examples]
        value = tofu.rouge_l_recall(generated, [ex.answer for ex in examples])
        return Computed(value.aggregate, {f"{spec.prefix}_Q_A_ROUGE": value.per_example}, {spec.prefix: generated})

    truth_interval = "truth_ratio_forget" if forget else "truth_ratio"
    register(Metric(prob_name, "tofu",
                    (f"P(answer) / (P(answer) + Σ P(perturbed)) on {spec.title}" if spec.normalised_prob else
                     f"length-normalised probability of the answers on {spec.title}"),
                    "retain" if forget else "higher", compute_prob, plan_prob, paired="mean", headline=forget))
    register(Metric(f"{spec.prefix}_Q_A_ROUGE", "tofu", f"ROUGE-L recall of greedy answers on {spec.title}",
                    "retain" if forget else "higher", compute_rouge, plan_rouge, paired="mean", headline=forget))
    register(Metric(f"{spec.prefix}_Truth_Ratio", "tofu",
                    (f"mean min(R, 1/R) of the truth ratio on {spec.title}" if forget else
                     f"mean max(0, 1 − R) of the truth ratio on {spec.title}"),
                    "retain" if forget else "higher", compute_truth, plan_truth, interval=truth_interval,
                    paired=truth_interval, headline=forget))


for _spec in SPLITS:
    _declare_split(_spec)


def _plan_forget_answers(task, plan) -> None:
    for ex in task.eval_forget:
        plan.pair(ex.question, ex.answer)


def _memorization(function):
    def compute(inputs: Inputs) -> Computed:
        if not inputs.task.eval_forget:
            return Computed(None)
        value = function([inputs.scores[(ex.question, ex.answer)] for ex in inputs.task.eval_forget])
        return Computed(value.aggregate, {function.__name__: value.per_example})

    return compute


register(Metric("extraction_strength", "tofu",
                "share of a forget answer the model completes greedily from a prefix (1 − k/T)", "retain",
                _memorization(tofu.extraction_strength), _plan_forget_answers, paired="mean", headline=True))
register(Metric("exact_memorization", "tofu", "share of forget-answer tokens predicted exactly", "retain",
                _memorization(tofu.exact_memorization), _plan_forget_answers, paired="mean"))


def _forget_quality(inputs: Inputs) -> Computed:
    if "forget_truth_ratios" not in inputs.reference:
        return Computed(None)
    ratios = [r for r in inputs.per_example.get("forget_Truth_Ratio", []) if r is not None]
    return Computed(tofu.forget_quality(ratios, inputs.reference["forget_truth_ratios"]))


def _forget_quality_log10(inputs: Inputs) -> Computed:
    p = inputs.aggregates.get("forget_quality")
    if p is None:
        return Computed(None)
    return Computed(math.log10(p) if p > 0 else float("-inf"))


def _model_utility(inputs: Inputs) -> Computed:
    return Computed(tofu.model_utility(inputs.aggregates))


register(Metric("forget_quality", "tofu",
                "KS-test p-value of forget truth ratios vs the retain model (higher = closer to never trained on it)",
                "higher", _forget_quality, depends=("forget_Truth_Ratio",), reference=True,
                interval="forget_quality", headline=True))
register(Metric("forget_quality_log10", "tofu", "log10 of forget_quality", "higher", _forget_quality_log10,
                depends=("forget_quality", "forget_Truth_Ratio"), reference=True, interval="forget_quality_log10"))
register(Metric("model_utility", "tofu", "harmonic mean of the 9 retain / real-author / world-fact numbers",
                "higher", _model_utility, depends=tofu.MODEL_UTILITY_INPUTS, interval="model_utility",
                headline=True))


# --- membership inference: forget vs holdout answers -----------------------------------------------------------


def _declare_mia(name: str, statistic: str, meaning: str, moments: bool = False) -> None:
    def plan(task, plan) -> None:
        for ex in (*task.eval_forget, *task.holdout):
            plan.pair(ex.question, ex.answer, moments=moments)

    def compute(inputs: Inputs) -> Computed:
        task = inputs.task
        if not task.eval_forget or not task.holdout:
            return Computed(None)
        per_example = {f"{name}_{split}": mia.statistic_of(statistic, [(inputs.scores[(ex.question, ex.answer)],
                                                                          ex.answer) for ex in examples])
                       for split, examples in (("forget", task.eval_forget), ("holdout", task.holdout))}
        return Computed(mia.mia_auc(per_example[f"{name}_forget"], per_example[f"{name}_holdout"]), per_example)

    register(Metric(name, "tofu", meaning, "retain", compute, plan, interval="auc", headline=name == "mia_min_k"))


_declare_mia("mia_loss", "loss", "ROC AUC of the answer loss, forget vs holdout (0.5: indistinguishable)")
_declare_mia("mia_zlib", "zlib", "ROC AUC of the loss over zlib entropy, forget vs holdout")
_declare_mia("mia_min_k", "min_k", "ROC AUC of Min-K% (k = 0.4), forget vs holdout")
_declare_mia("mia_min_k_plus_plus", "min_k_plus_plus", "ROC AUC of Min-K%++ (k = 0.4), forget vs holdout",
             moments=True)


def _mia_reference(inputs: Inputs) -> Computed:
    ref, per_example = inputs.reference, inputs.per_example
    if "mia_loss_forget" not in per_example or "mia_loss_forget" not in ref:
        return Computed(None)
    values = {f"mia_reference_{split}": [a - b for a, b in zip(per_example[f"mia_loss_{split}"],
                                                                 ref[f"mia_loss_{split}"])]
              for split in ("forget", "holdout")}
    return Computed(mia.mia_auc(values["mia_reference_forget"], values["mia_reference_holdout"]), values)


def _mia_gradnorm(inputs: Inputs) -> Computed:
    from unlearnkit.evaluation.scoring.gradients import gradient_norms

    task = inputs.task
    if not task.eval_forget or not task.holdout:
        return Computed(None)
    values = {f"mia_gradnorm_{split}": gradient_norms(inputs.model, inputs.formatter,
                                                      [(ex.question, ex.answer) for ex in examples])
              for split, examples in (("forget", task.eval_forget), ("holdout", task.holdout))}
    return Computed(mia.mia_auc(values["mia_gradnorm_forget"], values["mia_gradnorm_holdout"]), values)


def privleak_of(inputs: Inputs) -> Computed:
    """privleak of ``mia_min_k`` against the retain model's Min-K% AUC (:func:`.mia.privleak`); TOFU and MUSE."""
    auc = inputs.aggregates.get("mia_min_k")
    if auc is None or "mia_min_k_auc" not in inputs.reference:
        return Computed(None)
    return Computed(mia.privleak(auc, float(inputs.reference["mia_min_k_auc"])))


register(Metric("mia_reference", "tofu",
                "ROC AUC of the loss minus the retain model's loss (reference-model attack), forget vs holdout",
                "retain", _mia_reference, depends=("mia_loss",), reference=True, interval="auc"))
register(Metric("mia_gradnorm", "tofu", "ROC AUC of the gradient norm of the answer loss, forget vs holdout",
                "retain", _mia_gradnorm, _plan_forget_answers, interval="auc", opt_in=True))
register(Metric("privleak", "tofu",
                "(AUC′ − AUC′_retain) / AUC′_retain × 100 of Min-K%, AUC′ = 1 − AUC (0 is ideal)", "retain",
                privleak_of, depends=("mia_min_k",), reference=True, interval="privleak", headline=True))
