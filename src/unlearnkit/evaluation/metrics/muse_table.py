"""The MUSE suite's metrics, declared (:mod:`.registry`): what each asks of the suite and how it is computed.

Paper: "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", Shi et al. 2024, arXiv:2407.06460;
reference implementation swj0419/muse_bench ``eval.py`` (``eval_model``). Which data each metric reads:

=====================  =============================  ===============================================================
metric                 data                           value
=====================  =============================  ===============================================================
verbmem_f              forget chunks                  mean ROUGE-L F1 of the greedy continuation of each chunk's
                                                      prefix (:func:`unlearnkit.evaluation.metrics.muse.verbmem_prompts`)
knowmem_f              task.forget_qa (+ its shots)   mean ROUGE-L F1 of the few-shot greedy answers
knowmem_r              task.retain_qa (+ its shots)   as knowmem_f
mia_loss               forget vs holdout chunks       ROC AUC of the mean NLL of each chunk (forget 0, holdout 1)
mia_zlib               forget vs holdout chunks       ROC AUC of mean NLL / zlib length of the chunk's text
mia_min_k              forget vs holdout chunks       ROC AUC of Min-K% (k = 0.4, MUSE's ``forget_holdout_Min-40%``)
mia_min_k_plus_plus    forget vs holdout chunks       ROC AUC of Min-K%++ (k = 0.4)
privleak               —                              mia_min_k against the retain model's (:func:`.mia.privleak`)
forget_mcq_accuracy    task.forget_mcq                zero-shot multiple-choice accuracy (WMDP; :mod:`.multiple_choice`)
retain_mcq_accuracy    task.retain_mcq                as forget_mcq_accuracy (MMLU)
=====================  =============================  ===============================================================

The suite (:mod:`unlearnkit.evaluation.suites.muse`) generates what the generation metrics plan (each one's
examples, as dicts of :class:`.muse.MuseExample`, in ``Inputs.generations[name]``) and scores the forget and holdout
chunks for the membership metrics (``Inputs.texts[split]`` → ``Inputs.scores[text]``).
"""

from __future__ import annotations

from unlearnkit.evaluation.metrics import mia
from unlearnkit.evaluation.metrics.multiple_choice import declare_accuracies
from unlearnkit.evaluation.metrics.registry import Computed, Inputs, Metric, register
from unlearnkit.evaluation.metrics.tofu_table import privleak_of


def _declare_generation(name: str, meaning: str, better: str) -> None:
    def plan(task, plan) -> None:
        plan.generate.append(name)

    def compute(inputs: Inputs) -> Computed:
        examples = inputs.generations.get(name, [])
        values = [ex["rougeL_f1"] for ex in examples]
        return Computed(sum(values) / len(values) if values else None, {name: values},
                        {name: [ex["generation"] for ex in examples]})

    register(Metric(name, "muse", meaning, better, compute, plan, paired="mean", headline=True))


_declare_generation("verbmem_f", "ROUGE-L F1 of greedy continuations of forget-text prefixes (verbatim memory)",
                    "retain")
_declare_generation("knowmem_f", "ROUGE-L F1 of few-shot answers to questions about the forget texts", "retain")
_declare_generation("knowmem_r", "ROUGE-L F1 of few-shot answers to questions about the retain texts", "higher")


def _declare_mia(name: str, statistic: str, meaning: str, moments: bool = False) -> None:
    def plan(task, plan) -> None:
        plan.score_chunks = True
        plan.moments = plan.moments or moments

    def compute(inputs: Inputs) -> Computed:
        per_example = {f"{name}_{split}": mia.statistic_of(statistic, [(inputs.scores[t], t)
                                                                          for t in inputs.texts[split]])
                       for split in ("forget", "holdout")}
        return Computed(mia.mia_auc(per_example[f"{name}_forget"], per_example[f"{name}_holdout"]), per_example)

    register(Metric(name, "muse", meaning, "retain", compute, plan, interval="auc", headline=name == "mia_min_k"))


_declare_mia("mia_loss", "loss", "ROC AUC of the chunk loss, forget vs holdout chunks (0.5: indistinguishable)")
_declare_mia("mia_zlib", "zlib", "ROC AUC of the loss over zlib entropy, forget vs holdout chunks")
_declare_mia("mia_min_k", "min_k", "ROC AUC of Min-K% (k = 0.4), forget vs holdout chunks")
_declare_mia("mia_min_k_plus_plus", "min_k_plus_plus", "ROC AUC of Min-K%++ (k = 0.4), forget vs holdout chunks",
             moments=True)
register(Metric("privleak", "muse",
                "(AUC′ − AUC′_retain) / AUC′_retain × 100 of Min-K%, AUC′ = 1 − AUC (0 is ideal)", "retain",
                privleak_of, depends=("mia_min_k",), reference=True, interval="privleak", headline=True))
declare_accuracies()
