"""The metric table: one declaration makes a metric planned, scored, computed, bootstrapped, compared and reported.

A toy metric (the probability of each forget answer's first token) is declared in one place, here; the suite plans
its pairs, the scoring pass scores them, the value equals a forward pass of the model computed independently in this
test, the interval is the bootstrap of its per-example values, ``unlearnkit compare`` pairs it, and the CLI summary
and the report show it with its meaning. The table's own declarations are checked for consistency.
"""

import math

import numpy as np
import pytest
import torch
from store_fixture import EVAL, build

from unlearnkit.cli import _print_summary
from unlearnkit.config import EvalConfig
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.evaluation.metrics import registry
from unlearnkit.evaluation.metrics.registry import Computed, Inputs, Metric
from unlearnkit.evaluation.metrics.statistics import bootstrap_ci
from unlearnkit.evaluation.suites.tofu import plan_tofu
from unlearnkit.report.compare import compare_results
from unlearnkit.report.html import render_report

TOY = "toy_first_token_prob"


def _plan(task, plan):
    for ex in task.eval_forget:
        plan.pair(ex.question, ex.answer)


def _compute(inputs: Inputs) -> Computed:
    values = [math.exp(inputs.scores[(ex.question, ex.answer)].token_logprobs[0]) for ex in inputs.task.eval_forget]
    return Computed(float(np.mean(values)), {TOY: values})


@pytest.fixture
def toy_metric():
    registry.register(Metric(TOY, "tofu", "probability of the first token of each forget answer", "lower",
                             _compute, _plan, interval="mean", paired="mean", headline=True))
    yield
    registry.unregister("tofu", TOY)


def _first_token_probs(model, formatter, examples) -> list[float]:
    out = []
    with torch.no_grad():
        for ex in examples:
            enc = formatter.encode(ex.question, ex.answer)
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0, enc.prompt_length - 1].float()
            out.append(torch.softmax(logits, -1)[enc.input_ids[enc.prompt_length]].item())
    return out


def test_a_declared_metric_is_planned_scored_bootstrapped_compared_and_reported(toy_metric, tmp_path, capsys):
    model, formatter, task = build()
    model.eval()
    assert TOY in registry.names("tofu") and TOY in registry.headline()
    assert plan_tofu(task, [TOY]).pairs == [(ex.question, ex.answer) for ex in task.eval_forget]

    evaluator = Evaluator(task, formatter, EvalConfig(**EVAL), metrics=[TOY], cache_dir=tmp_path, progress=False)
    result = evaluator.evaluate(model)
    expected = _first_token_probs(model, formatter, task.eval_forget)
    assert result.per_example[TOY] == pytest.approx(expected, abs=1e-6)
    assert result.aggregates == {TOY: pytest.approx(float(np.mean(expected)), abs=1e-6)}
    assert result.intervals[TOY] == list(bootstrap_ci(result.per_example[TOY], np.mean))

    results = {"task": {"name": task.name}, "models": {"unlearned": result.to_dict()}}
    other = {"task": {"name": task.name}, "models": {"unlearned": {**result.to_dict(), "per_example": {
        TOY: [v * 0.5 for v in result.per_example[TOY]]}}}}
    row = compare_results(results, other)[TOY]
    assert row["difference"] == pytest.approx(float(np.mean(result.per_example[TOY])) * 0.5)
    _print_summary(results)
    assert TOY in capsys.readouterr().out
    page = render_report({**results, "method": {"name": "npo", "citation": ""}, "training": {"steps": 0, "logs": []}})
    assert TOY in page and "probability of the first token of each forget answer" in page


def test_every_declaration_is_consistent():
    for suite in ("tofu", "muse"):
        table = registry.metrics_of(suite)
        assert table, suite
        for name, metric in table.items():
            assert metric.meaning and metric.better in ("higher", "lower", "retain"), name
            assert set(metric.depends) <= set(table), name  # dependencies exist in the same suite
            assert metric.plan is not None or metric.depends, name  # computed from the model, or from other metrics
            if metric.reference:
                assert metric.interval in (None, "privleak", "forget_quality", "forget_quality_log10", "auc"), name
    assert registry.resolve("tofu", ["model_utility"]) >= {"retain_Q_A_Prob", "ra_Truth_Ratio", "wf_Q_A_ROUGE"}
    assert registry.resolve("tofu", ["forget_quality_log10"]) == {"forget_quality_log10", "forget_quality",
                                                                  "forget_Truth_Ratio"}
    order = [m.name for m in registry.in_order("tofu", registry.resolve("tofu", ["privleak", "mia_reference"]))]
    assert order.index("mia_min_k") < order.index("privleak") and order.index("mia_loss") < order.index("mia_reference")
    assert "mia_gradnorm" not in registry.resolve("tofu", None)  # opt-in
