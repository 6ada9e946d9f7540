"""``unlearnkit compare RUN_A RUN_B``: the paired difference of two runs' metrics on the same evaluation examples.

For every metric whose per-example values both runs hold for the same examples (the metric table's ``paired``:
probabilities, ROUGE, truth-ratio aggregates, extraction strength, exact memorization, VerbMem, KnowMem) the difference d = metric(A) − metric(B) with a 95% bootstrap
interval (examples resampled jointly) and a sign-flip permutation p-value
(:func:`unlearnkit.evaluation.metrics.statistics.paired_difference`). Metrics computed across splits or models
(model_utility, forget_quality, AUCs) have no single paired per-example sample and are listed without a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unlearnkit.errors import RunDirectoryError, UnlearnkitError
from unlearnkit.evaluation.metrics import registry
from unlearnkit.evaluation.metrics import tofu as tofu_metrics
from unlearnkit.evaluation.metrics.statistics import paired_difference

AGGREGATES = {"mean": np.mean, "truth_ratio_forget": tofu_metrics.closer_to_1_better,
              "truth_ratio": tofu_metrics.true_better}


def load_results(run_dir: Path) -> dict:
    """A run's ``results.json``; a missing folder or file, or an unreadable one, is a one-line error naming it."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirectoryError(f"run directory {run_dir} does not exist: pass a run directory written by `unlearnkit run`")
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir} is not a directory: pass a run directory written by `unlearnkit run`")
    path = run_dir / "results.json"
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} has no results.json: pass a finished run directory (written by `unlearnkit run`)")
    try:
        results = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RunDirectoryError(f"{path}: not UTF-8 text (offset {exc.start}): the file is damaged: run again, or "
                              "restore it") from None
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"{path}, line {exc.lineno}, column {exc.colno}: unreadable JSON ({exc.msg}): the "
                              "file is damaged: run again, or restore it") from None
    if not isinstance(results, dict):
        raise RunDirectoryError(f"{path} holds a JSON {type(results).__name__}, not the results object: run again, "
                              "or restore it")
    return results


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
