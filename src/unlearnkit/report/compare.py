"""``unlearnkit compare RUN_A RUN_B``: the paired difference of two runs' metrics on the same evaluation examples.

For every metric whose per-example values both runs hold for the same examples (the metric table's ``paired``:
probabilities, ROUGE, truth-ratio aggregates, extraction strength, exact memorization, VerbMem, KnowMem) the difference d = metric(A) − metric(B) with a 95% bootstrap
interval (examples resampled jointly) and a sign-flip permutation p-value
(:func:`unlearnkit.evaluation.metrics.statistics.paired_difference`). Metrics computed across splits or models
(model_utility, forget_quality, AUCs) have no single paired per-example sample and are listed without a test.
"""

from __future__ import annotations

import numpy as np

from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.metrics import registry
from unlearnkit.evaluation.metrics import tofu as tofu_metrics
from unlearnkit.evaluation.metrics.statistics import paired_difference
from unlearnkit.finished_run import load_results  # noqa: F401  (unlearnkit.report.compare.load_results, as before)

AGGREGATES = {"mean": np.mean, "truth_ratio_forget": tofu_metrics.closer_to_1_better,
              "truth_ratio": tofu_metrics.true_better}


def compare_results(a: dict, b: dict, model: str = "unlearned", seed: int = 0) -> dict[str, dict]:
    """Per metric: ``{"a", "b", "difference", "low", "high", "p_value"}`` (the last four only when paired)."""
    try:
        ma, mb = a["models"][model], b["models"][model]
    except KeyError:
        raise UnlearnkitError(f"both runs need results of the {model!r} model: choose --model unlearned, target or retain") from None
    if a.get("task", {}).get("name") != b.get("task", {}).get("name"):
        raise UnlearnkitError(f"the runs evaluated different tasks ({a.get('task', {}).get('name')} vs "
                              f"{b.get('task', {}).get('name')}): compare runs of the same task")
    out: dict[str, dict] = {}
    for name in ma["aggregates"]:
        row = {"a": ma["aggregates"].get(name), "b": mb["aggregates"].get(name)}
        declared = registry.metric(name)
        paired = declared.paired if declared is not None else None
        va, vb = ma["per_example"].get(name), mb["per_example"].get(name)
        if paired and va and vb and len(va) == len(vb) and None not in va and None not in vb:
            row.update(paired_difference(va, vb, aggregate=AGGREGATES[paired], seed=seed))
        out[name] = row
    return out
