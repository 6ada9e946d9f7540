"""`unlearnkit compare`: paired differences of two runs, checked against the statistics module and by hand."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.evaluation.metrics.statistics import paired_difference
from unlearnkit.report.compare import compare_results


def run_results(probs, ratios, auc):
    return {"task": {"name": "t"}, "models": {"unlearned": {
        "aggregates": {"forget_Q_A_Prob": float(np.mean(probs)),
                       "forget_Truth_Ratio": float(np.mean(np.minimum(ratios, 1 / (np.array(ratios) + 1e-10)))),
                       "mia_min_k": auc},
        "per_example": {"forget_Q_A_Prob": probs, "forget_Truth_Ratio": ratios}}}}


A = run_results([0.1, 0.2, 0.3, 0.4], [0.5, 1.0, 2.0, 0.8], 0.6)
B = run_results([0.3, 0.2, 0.5, 0.6], [0.9, 1.1, 1.0, 0.7], 0.7)


def test_paired_metrics_get_a_difference_interval_and_p_value():
    table = compare_results(A, B)
    prob = table["forget_Q_A_Prob"]
    assert prob["difference"] == pytest.approx(0.25 - 0.4)
    assert prob == {"a": 0.25, "b": 0.4, **paired_difference([0.1, 0.2, 0.3, 0.4], [0.3, 0.2, 0.5, 0.6])}
    closer = lambda r: np.mean(np.minimum(r, 1 / (r + 1e-10)))  # noqa: E731
    assert table["forget_Truth_Ratio"]["difference"] == pytest.approx(closer(np.array([0.5, 1.0, 2.0, 0.8]))
                                                                      - closer(np.array([0.9, 1.1, 1.0, 0.7])))
    assert table["mia_min_k"] == {"a": 0.6, "b": 0.7}  # no paired per-example sample: no test


def test_cli_compare_and_its_errors(tmp_path):
    for name, results in (("a", A), ("b", B)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--output", str(tmp_path / "c.json")])
    assert result.exit_code == 0 and "forget_Q_A_Prob" in result.stdout
    assert json.loads((tmp_path / "c.json").read_text())["forget_Q_A_Prob"]["difference"] == pytest.approx(-0.15)
    missing = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope does not exist" in missing.stderr
