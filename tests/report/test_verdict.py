"""The report's verdict line against its stated rule (report/verdict.py), on aggregates worked out by hand."""

from unlearnkit.report.verdict import gap_closed, verdict


def _models(fq: float, prob: tuple[float, float, float], utility: tuple[float, float]) -> dict:
    unlearned, target, retain = prob
    return {"unlearned": {"aggregates": {"forget_quality": fq, "forget_Q_A_Prob": unlearned, "model_utility": utility[0]}},
            "target": {"aggregates": {"forget_quality": 1e-6, "forget_Q_A_Prob": target, "model_utility": utility[1]}},
            "retain": {"aggregates": {"forget_quality": 1.0, "forget_Q_A_Prob": retain, "model_utility": 0.5}}}


def test_gap_closed_by_hand():
    assert gap_closed(0.9, 0.3, 0.1) == (0.9 - 0.3) / (0.9 - 0.1)  # 75%
    assert gap_closed(0.9, 0.05, 0.1) > 1  # past the retain model
    assert gap_closed(0.5, 0.3, 0.5) is None and gap_closed(None, 0.3, 0.1) is None


def test_close_and_cheap():
    # p = 0.2 ≥ 0.05; gap (0.9 − 0.3) / (0.9 − 0.1) = 75%; utility (0.48 − 0.5) / 0.5 = −4% (a drop ≤ 5%: kept)
    line = verdict(_models(0.2, (0.3, 0.9, 0.1), (0.48, 0.5)))
    assert "indistinguishable from the retain model's (forget quality p = 0.2; the target's p = 1e-06)" in line
    assert "by 75% on forget_Q_A_Prob" in line
    assert "kept utility: model_utility 0.48 vs the target's 0.5 (-4.0%)" in line


def test_far_and_costly():
    # p = 0.001 < 0.05; gap (0.9 − 0.8) / 0.8 = 12.5% → "12%" (Python rounds half to even); utility −30%
    line = verdict(_models(0.001, (0.8, 0.9, 0.1), (0.35, 0.5)))
    assert "are distinguishable from the retain model's" in line and "by 12% on forget_Q_A_Prob" in line
    assert "cost 30.0% of utility" in line


def test_no_verdict_without_a_target():
    assert verdict({"unlearned": {"aggregates": {"forget_quality": 0.5}}}) == ""


def test_no_gap_when_the_retain_value_is_inside_the_targets_interval():
    models = _models(0.2, (0.3, 0.9, 0.1), (0.0, 0.0))
    models["target"]["intervals"] = {"forget_Q_A_Prob": [0.05, 0.95]}  # holds the retain model's 0.1
    line = verdict(models)
    assert "do not measurably differ on forget_Q_A_Prob" in line and "% on forget_Q_A_Prob" not in line
    assert "its relative cost is undefined, the target's model_utility being 0" in line
