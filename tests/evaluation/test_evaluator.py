"""The Evaluator: the task's suite (TOFU for QA tasks, MUSE for raw text), the cache of saved models' results, the
reference and the intervals; and unlearnkit.evaluate on both kinds of task."""

import shutil
from dataclasses import replace

import pytest
from store_fixture import EVAL, build, build_corpus

import unlearnkit
from unlearnkit.config import EvalConfig
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator, suite_metrics
from unlearnkit.evaluation.metrics.intervals import aggregate_intervals
from unlearnkit.evaluation.suites.muse import MUSE_SUITE_METRICS, evaluate_muse_suite
from unlearnkit.evaluation.suites.result import with_reference
from unlearnkit.evaluation.suites.tofu import METRIC_NAMES, evaluate_tofu
from unlearnkit.models.load import save_model

CONFIG = EvalConfig(**EVAL, intervals=False)


def test_a_qa_task_gets_the_tofu_suite(tmp_path):
    model, formatter, task = build()
    assert suite_metrics(task) == tuple(METRIC_NAMES)
    metrics = {"forget_Q_A_Prob", "mia_loss"}
    evaluator = Evaluator(task, formatter, CONFIG, metrics=metrics, cache_dir=tmp_path, progress=False)
    assert evaluator.evaluate(model).to_dict() == evaluate_tofu(model, formatter, task, metrics=metrics,
                                                               progress=False, **EVAL).to_dict()


def test_unknown_metric_names_fail_when_the_evaluator_is_built():
    model, formatter, task = build()
    with pytest.raises(UnlearnkitError, match="unknown TOFU metric"):
        Evaluator(task, formatter, CONFIG, metrics={"forget_quality", "verbmem_f"})


def test_a_raw_text_task_without_holdout_gets_none_for_the_membership_metrics(tmp_path):
    """Like a QA task without holdout: VerbMem and KnowMem are computed, every MIA AUC and privleak is None, and
    the retain model's result has no reference statistics to offer (instead of an error)."""
    model, formatter, task = build_corpus()
    assert suite_metrics(task) == tuple(MUSE_SUITE_METRICS)
    no_holdout = replace(task, holdout=[])
    result = Evaluator(no_holdout, formatter, EvalConfig(batch_size=2, intervals=False), cache_dir=tmp_path,
                       progress=False).evaluate(model)
    assert set(result.aggregates) == set(MUSE_SUITE_METRICS)
    for name in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "privleak"):
        assert result.aggregates[name] is None
    full = evaluate_muse_suite(model, formatter, task, batch_size=2, progress=False)
    for name in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert result.aggregates[name] == full.aggregates[name] is not None
    assert result.reference_stats(required=False) == {}


def test_a_saved_model_is_evaluated_once_under_its_weights_fingerprint(tmp_path, monkeypatch):
    """The second evaluation of the same weights — from another folder too — reads the cached result; other weights
    are evaluated anew; the reference is applied after the cache, without a model."""
    model, formatter, task = build()
    first, copy = tmp_path / "model", tmp_path / "copy"
    save_model(model, formatter.tokenizer, first)
    shutil.copytree(first, copy)
    evaluator = Evaluator(task, formatter, CONFIG, cache_dir=tmp_path / "cache", progress=False)
    baseline = evaluator.evaluate_saved(first)
    assert baseline.aggregates == evaluator.evaluate(model, store=False).aggregates

    calls = []
    monkeypatch.setattr("unlearnkit.evaluation.evaluator.evaluate_tofu", lambda *a, **k: calls.append(a))
    assert evaluator.evaluate_saved(copy).to_dict() == baseline.to_dict()
    assert calls == []

    reference = {"forget_truth_ratios": [0.5, 0.9, 1.3], "mia_min_k_auc": 0.6}
    compared = evaluator.evaluate_saved(copy, reference)
    assert compared.aggregates == with_reference(baseline, reference).aggregates
    assert compared.aggregates["forget_quality"] is not None and compared.aggregates["privleak"] is not None

    with_intervals = Evaluator(task, formatter, EvalConfig(**EVAL), cache_dir=tmp_path / "cache",
                               progress=False).evaluate_saved(copy, reference)
    assert with_intervals.intervals == aggregate_intervals(compared.aggregates, compared.per_example, reference)


def test_unlearnkit_evaluate_takes_either_kind_of_task():
    model, formatter, task = build()
    qa = unlearnkit.evaluate(model, task, tokenizer=formatter.tokenizer, max_length=64, metrics=["forget_Q_A_Prob"],
                             batch_size=4, max_new_tokens=6)
    assert set(qa.aggregates) == {"forget_Q_A_Prob"} and qa.intervals["forget_Q_A_Prob"] is not None
    model, formatter, corpus = build_corpus()
    muse = unlearnkit.evaluate(model, corpus, tokenizer=formatter.tokenizer, max_length=64, metrics=["knowmem_r"],
                               batch_size=2, intervals=False)
    assert muse.suite == "muse" and set(muse.aggregates) == {"knowmem_r"} and muse.aggregates["knowmem_r"] is not None


def test_a_new_stored_score_version_recomputes_a_cached_result(tmp_path, monkeypatch):
    """The cached whole result of a saved model is keyed by the version of the suite's stored scores (TOFU's or
    MUSE's), so a change in what the scoring or generation computes never reads an old result."""
    import unlearnkit.evaluation.evaluator as evaluator_module

    for built, version in ((build(), "SCORES_VERSION"), (build_corpus(), "TEXT_SCORES_VERSION")):
        model, formatter, task = built
        evaluator = Evaluator(task, formatter, CONFIG, cache_dir=tmp_path, progress=False)
        before = evaluator._result_path(model)
        monkeypatch.setattr(evaluator_module, version, getattr(evaluator_module, version) + 1)
        assert evaluator._result_path(model) != before
