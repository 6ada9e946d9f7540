"""The suite of a task: TOFU for QA tasks, MUSE for raw-text tasks, and what a raw-text task without holdout gives."""

from dataclasses import replace

from store_fixture import EVAL, build, build_corpus
from unlearnkit.evaluation.suites.muse import MUSE_SUITE_METRICS, evaluate_muse_suite
from unlearnkit.evaluation.suites.tofu import METRIC_NAMES, evaluate_tofu
from unlearnkit.evaluation.evaluator import evaluate_task, suite_metrics

def test_a_qa_task_gets_the_tofu_suite():
    model, formatter, task = build()
    assert suite_metrics(task) == tuple(METRIC_NAMES)
    metrics = {"forget_Q_A_Prob", "mia_loss"}
    result = evaluate_task(model, formatter, task, None, EVAL, metrics=metrics, progress=False)
    assert result.to_dict() == evaluate_tofu(model, formatter, task, metrics=metrics, progress=False,
                                             **EVAL).to_dict()


def test_a_raw_text_task_without_holdout_gets_none_for_the_membership_metrics():
    """Like a QA task without holdout: VerbMem and KnowMem are computed, every MIA AUC and privleak is None, and
    the retain model's result has no reference statistics to offer (instead of an error)."""
    model, formatter, task = build_corpus()
    assert suite_metrics(task) == tuple(MUSE_SUITE_METRICS)
    no_holdout = replace(task, holdout=[])
    result = evaluate_task(model, formatter, no_holdout, None, {"batch_size": 2}, progress=False)
    assert set(result.aggregates) == set(MUSE_SUITE_METRICS)
    for name in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "privleak"):
        assert result.aggregates[name] is None
    full = evaluate_muse_suite(model, formatter, task, batch_size=2, progress=False)
    for name in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert result.aggregates[name] == full.aggregates[name] is not None
    assert result.reference_stats(required=False) == {}
