"""OpenUnlearning's further TOFU metrics, declared (:mod:`.registry`) beside the core ones of :mod:`.tofu_table`.

Which split and which answer each reads follows OpenUnlearning's ``configs/eval/tofu_metrics/*.yaml``
(locuslab/open-unlearning); the formulas are in :mod:`.tofu` and :mod:`.fluency`:

==============================  ==================  ============================================================
metric                          split               what it reads
==============================  ==================  ============================================================
forget_Q_A_PARA_Prob            task.eval_forget    (question, paraphrased_answer): P, as Q_A_Prob
forget_Q_A_PERT_Prob            task.eval_forget    (question, perturbed_j): mean_j P per example
forget_Q_A_PARA_ROUGE           task.eval_forget    greedy answer to question vs paraphrased_answer (opt-in)
forget_Q_A_PERT_ROUGE           task.eval_forget    greedy answer to question vs each perturbed_j, mean_j (opt-in)
retain_Q_A_PARA_* / PERT_*      task.eval_retain    as forget
retain_extraction_strength      task.eval_retain    (question, answer), as extraction_strength
forget_Q_A_gibberish            task.eval_forget    the greedy answers of forget_Q_A_ROUGE → P(clean) (opt-in)
==============================  ==================  ============================================================

None of them costs a model call of its own: the paraphrased and perturbed pairs are those the truth ratio scores,
the greedy answers those Q_A_ROUGE reads (OpenUnlearning generates from the same question prompt for the
paraphrased and perturbed rows, so with greedy decoding every row of a question has the same generation), and
retain_extraction_strength reads the retain answers that retain_Q_A_Prob scores. The PARA / PERT ROUGE metrics
are opt-in all the same (OpenUnlearning's ``tofu.yaml`` computes them by default): ROUGE-L with the stemmer costs
a few milliseconds a pair on a CPU, and they score six references per question, about 20 s more on forget10's 800
questions on this project's shared machine, where the two Q_A_ROUGE metrics take 3 s. forget_Q_A_gibberish runs a
classifier model of its own over the generations and is opt-in too (:mod:`.fluency`).

``retain_extraction_strength.yaml`` names a handler ``retain_extraction_strength`` on the ``retain_perturbed``
split with the question key; the handler is not in the OpenUnlearning ``src/evals/metrics/__init__.py`` read for
this module, so it is computed here as ``extraction_strength`` on that split (the same per-example formula as the
forget one).
"""

from __future__ import annotations

from unlearnkit.evaluation.metrics import fluency, tofu
from unlearnkit.evaluation.metrics.registry import Computed, Inputs, Metric, register

SPLITS = (("forget", "eval_forget", "the forget set"), ("retain", "eval_retain", "the retain set"))


def _with_paraphrase(examples):
    return [ex for ex in examples if ex.paraphrased_answer is not None]


def _with_perturbed(examples):
    return [ex for ex in examples if ex.perturbed_answers]


def _declare(prefix: str, task_field: str, title: str) -> None:
    better = "retain" if prefix == "forget" else "higher"  # as Q_A_Prob / Q_A_ROUGE of the split
    # the wrong answers' numbers have no better side of their own: the retain model's value is the ideal

    def para_prob_plan(task, plan) -> None:
        for ex in _with_paraphrase(getattr(task, task_field)):
            plan.pair(ex.question, ex.paraphrased_answer)

    def para_prob(inputs: Inputs) -> Computed:
        examples = _with_paraphrase(getattr(inputs.task, task_field))
        if not examples:
            return Computed(None)
        value = tofu.answer_probability([inputs.scores[(ex.question, ex.paraphrased_answer)] for ex in examples])
        return Computed(value.aggregate, {f"{prefix}_Q_A_PARA_Prob": value.per_example})

    def pert_prob_plan(task, plan) -> None:
        for ex in _with_perturbed(getattr(task, task_field)):
            for wrong in ex.perturbed_answers:
                plan.pair(ex.question, wrong)

    def pert_prob(inputs: Inputs) -> Computed:
        examples = _with_perturbed(getattr(inputs.task, task_field))
        if not examples:
            return Computed(None)
        value = tofu.mean_answer_probability([[inputs.scores[(ex.question, w)] for w in ex.perturbed_answers]
                                              for ex in examples])
        return Computed(value.aggregate, {f"{prefix}_Q_A_PERT_Prob": value.per_example})

    def rouge_plan(select):
        def plan_questions(task, plan) -> None:
            for ex in select(getattr(task, task_field)):
                plan.question(ex.question, ex.answer)

        return plan_questions

    def para_rouge(inputs: Inputs) -> Computed:
        examples = _with_paraphrase(getattr(inputs.task, task_field))
        if not examples:
            return Computed(None)
        generated = [inputs.generations[ex.question] for ex in examples]
        value = tofu.rouge_l_recall(generated, [ex.paraphrased_answer for ex in examples])
        return Computed(value.aggregate, {f"{prefix}_Q_A_PARA_ROUGE": value.per_example})

    def pert_rouge(inputs: Inputs) -> Computed:
        examples = _with_perturbed(getattr(inputs.task, task_field))
        if not examples:
            return Computed(None)
        generated = [inputs.generations[ex.question] for ex in examples]
        value = tofu.mean_rouge_l_recall(generated, [list(ex.perturbed_answers) for ex in examples])
        return Computed(value.aggregate, {f"{prefix}_Q_A_PERT_ROUGE": value.per_example})

    register(Metric(f"{prefix}_Q_A_PARA_Prob", "tofu", f"length-normalised probability of the paraphrased "
                    f"answers on {title}", better, para_prob, para_prob_plan, paired="mean"))
    register(Metric(f"{prefix}_Q_A_PERT_Prob", "tofu", f"mean length-normalised probability of the perturbed "
                    f"(wrong) answers on {title}", "retain", pert_prob,
                    pert_prob_plan, paired="mean"))
    register(Metric(f"{prefix}_Q_A_PARA_ROUGE", "tofu", f"ROUGE-L recall of greedy answers vs the paraphrased "
                    f"answers on {title}", better, para_rouge, rouge_plan(_with_paraphrase), paired="mean",
                    opt_in=True))
    register(Metric(f"{prefix}_Q_A_PERT_ROUGE", "tofu", f"mean ROUGE-L recall of greedy answers vs the perturbed "
                    f"answers on {title}", "retain", pert_rouge,
                    rouge_plan(_with_perturbed), paired="mean", opt_in=True))


for _prefix, _field, _title in SPLITS:
    _declare(_prefix, _field, _title)


def _plan_retain_answers(task, plan) -> None:
    for ex in task.eval_retain:
        plan.pair(ex.question, ex.answer)


def _retain_extraction_strength(inputs: Inputs) -> Computed:
    if not inputs.task.eval_retain:
        return Computed(None)
    value = tofu.extraction_strength([inputs.scores[(ex.question, ex.answer)] for ex in inputs.task.eval_retain])
    return Computed(value.aggregate, {"retain_extraction_strength": value.per_example})


register(Metric("retain_extraction_strength", "tofu",
                "share of a retain answer the model completes greedily from a prefix (1 − k/T)", "higher",
                _retain_extraction_strength, _plan_retain_answers, paired="mean"))


def _plan_gibberish(task, plan) -> None:
    fluency.cached_classifier()  # a missing classifier stops the evaluation here, before the model runs
    for ex in task.eval_forget:
        plan.question(ex.question, ex.answer)


def _gibberish(inputs: Inputs) -> Computed:
    if not inputs.task.eval_forget:
        return Computed(None)
    generated = [inputs.generations[ex.question] for ex in inputs.task.eval_forget]
    device = next(inputs.model.parameters()).device if inputs.model is not None else "cpu"
    tokenizer, classifier = fluency.load_classifier(device=device)
    per_example = fluency.class_probabilities(generated, tokenizer, classifier)
    return Computed(tofu.mean_of_present(per_example), {"forget_Q_A_gibberish": per_example},
                    {"forget": generated})


register(Metric("forget_Q_A_gibberish", "tofu",
                "mean probability that a greedy forget answer is clean text (gibberish classifier)", "retain",
                _gibberish, _plan_gibberish, opt_in=True))
