"""report.html's figures and verdict, the model card and ``unlearnkit export`` on one demo-sized run (issue 19, parts
1 and 4).

The run (made once for the module) is the synthetic task with the tiny base, NPO and the training monitor, so every
figure a run without attacks can have is drawn. The numbers the figures print are checked against values worked
out here from results.json by a naive recomputation (the KS statistic as the largest gap between two empirical
CDFs, evaluated at every data point; the resisting examples one by one) or against the evaluation's own aggregates
(forget_quality, the MIA AUCs), which the figures recompute from the per-example statistics with scipy/sklearn.
"""

import hashlib
import html
import json
import re
from html.parser import HTMLParser

import pytest
import yaml
from typer.testing import CliRunner

import unlearnkit
from unlearnkit.cli import app
from unlearnkit.config import parse_config
from unlearnkit.report.html import render_report
from unlearnkit.report.model_card import card_metadata
from unlearnkit.report.plots import RESIST_FRACTION, resisting_examples

runner = CliRunner()

CONFIG = {  # tests/pipeline/test_run.py's SMALL (the session cache shares its prepared models), with the monitor
    "task": {"source": "synthetic", "options": {"n_people": 8, "forget_people": 2, "holdout_people": 2}},
    "model": {"base": "tiny", "max_length": 96},
    "prepare": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5},
    "method": {"name": "npo"},
    "train": {"epochs": 2, "batch_size": 4, "learning_rate": 5e-4, "warmup_steps": 0, "schedule": "constant"},
    "eval": {"batch_size": 32, "max_new_tokens": 12, "n_resamples": 200},
    "monitor": {"every_epoch": True, "metrics": ["forget_Q_A_Prob"]},
}
PLOTS = ("truth-ratio", "qa-prob-scatter", "quality-utility", "mia-roc", "training", "monitor")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    output = tmp_path_factory.mktemp("report") / "run"
    return unlearnkit.unlearn({**CONFIG, "output_dir": str(output)}, progress=False).run_dir


@pytest.fixture(scope="module")
def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


class _Svgs(HTMLParser):
    """Each top-level <svg>'s id with the text of its <title> and of its <text> elements."""

    def __init__(self):
        super().__init__()
        self.found: dict[str, dict] = {}
        self._current, self._in = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg" and attrs.get("id", "").startswith("plot-"):
            self._current = attrs["id"][len("plot-"):]
            self.found[self._current] = {"title": "", "text": []}
        elif self._current and tag in ("title", "text"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == "svg":
            self._current = None
        elif tag in ("title", "text"):
            self._in = None

    def handle_data(self, data):
        if self._current and self._in == "title" and not self.found[self._current]["title"]:
            self.found[self._current]["title"] = data
        elif self._current and self._in == "text":
            self.found[self._current]["text"].append(data)


def _svgs(page: str) -> dict[str, dict]:
    parser = _Svgs()
    parser.feed(page)
    return parser.found


def test_report_has_every_plot_with_a_title_and_no_script(run_dir):
    page = (run_dir / "report.html").read_text()
    svgs = _svgs(page)
    assert set(PLOTS) <= set(svgs), sorted(svgs)
    assert all(svgs[name]["title"] for name in PLOTS)
    assert "<script" not in page  # no JavaScript, nothing fetched: no src/href/url() leaves the page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//""", page)


def _naive_ks(a: list[float], b: list[float]) -> float:
    """max over every data point x of |F_a(x) − F_b(x)|, the empirical CDFs counted one example at a time."""
    def cdf(values, x):
        return sum(1 for v in values if v <= x) / len(values)
    return max(abs(cdf(a, x) - cdf(b, x)) for x in a + b)


def test_truth_ratio_plot_prints_the_ks_statistic_and_forget_quality(run_dir, results):
    models = results["models"]
    text = " ".join(_svgs((run_dir / "report.html").read_text())["truth-ratio"]["text"])
    d = _naive_ks(models["unlearned"]["per_example"]["forget_Truth_Ratio"],
                  models["retain"]["per_example"]["forget_Truth_Ratio"])
    p = models["unlearned"]["aggregates"]["forget_quality"]
    assert f"D = {d:.3f}, p = {p:.3g}" in text


def test_scatter_counts_the_resisting_examples(run_dir, results):
    models = results["models"]
    target, unlearned, retain = (models[w]["per_example"]["forget_Q_A_Prob"] for w in ("target", "unlearned", "retain"))
    naive = [i for i in range(len(target)) if unlearned[i] >= RESIST_FRACTION * target[i] and unlearned[i] > retain[i]]
    text = _svgs((run_dir / "report.html").read_text())["qa-prob-scatter"]["text"]
    if naive:
        assert f"resisted ({len(naive)})" in text
    else:
        assert not any(t.startswith("resisted") for t in text)


def test_resisting_examples_by_hand():
    target = [0.8, 0.8, 0.8, 0.5, 0.0]
    unlearned = [0.5, 0.3, 0.5, 0.45, 0.1]
    retain = [0.1, 0.1, 0.6, 0.1, 0.0]
    # 0: 0.5 ≥ 0.4 and > 0.1 → resisted (ratio 0.625); 1: 0.3 < 0.4; 2: not above the retain model's 0.6;
    # 3: 0.45 ≥ 0.25 and > 0.1 → resisted (ratio 0.9, first); 4: a zero target probability is left out
    assert resisting_examples(target, unlearned, retain) == [3, 0]


def test_roc_curves_carry_the_evaluations_auc(run_dir, results):
    text = " ".join(_svgs((run_dir / "report.html").read_text())["mia-roc"]["text"])
    for who in ("unlearned", "target", "retain"):
        auc = results["models"][who]["aggregates"]["mia_min_k"]
        assert f"{who} (AUC {auc:.2f})" in text


def test_verdict_applies_its_rule(run_dir, results):
    page = (run_dir / "report.html").read_text()
    verdict = html.unescape(re.search(r'<p class="verdict" id="verdict">(.*?)</p>', page).group(1))
    models = {w: results["models"][w]["aggregates"] for w in ("unlearned", "target", "retain")}
    p = models["unlearned"]["forget_quality"]
    assert ("indistinguishable from" if p >= 0.05 else "distinguishable from") in verdict
    assert f"forget quality p = {p:.3g}" in verdict
    low, high = results["models"]["target"]["intervals"]["forget_Q_A_Prob"]
    if low <= models["retain"]["forget_Q_A_Prob"] <= high:
        assert re.search(r"do not measurably differ on [a-zA-Z_, ]*forget_Q_A_Prob", verdict)
    else:
        gap = ((models["target"]["forget_Q_A_Prob"] - models["unlearned"]["forget_Q_A_Prob"])
               / (models["target"]["forget_Q_A_Prob"] - models["retain"]["forget_Q_A_Prob"]))
        assert f"{gap:.0%} on forget_Q_A_Prob" in verdict
    target_utility = models["target"]["model_utility"]
    if target_utility:
        change = (models["unlearned"]["model_utility"] - target_utility) / target_utility
        assert f"({change:+.1%})" in verdict
        assert ("kept utility" if change >= -0.05 else f"cost {-change:.1%} of utility") in verdict
    else:  # a relative cost is undefined against a target utility of 0 (the tiny model's ROUGE can be 0)
        assert "its relative cost is undefined, the target's model_utility being 0" in verdict


def test_attack_curves_are_drawn_when_the_run_was_attacked(run_dir):
    attacked = {"robustness": {  # the shapes attacks/relearn.py (relearn_report) and attacks/latent.py write
        "relearn": {"curves": {"unlearned": {"steps": [0, 5, 10], "curve": {"forget_Q_A_Prob": [0.1, 0.3, 0.4]}},
                               "retain": {"steps": [0, 5, 10], "curve": {"forget_Q_A_Prob": [0.05, 0.2, 0.3]}}},
                    "target_values": {"forget_Q_A_Prob": 0.6}, "recovered_fraction": {}},
        "latent": {"unlearned": {"epsilons": [0.0, 0.5, 1.0], "prob": [0.1, 0.2, 0.4], "layer": 2}}}}
    assert set(_svgs(render_report(attacked))) == {"relearn", "latent"}
    assert not {"relearn", "latent"} & set(_svgs((run_dir / "report.html").read_text()))  # not attacked: none


def test_report_shows_the_audit_record(run_dir):
    page = (run_dir / "report.html").read_text()
    weights = hashlib.sha256((run_dir / "model" / "model.safetensors").read_bytes()).hexdigest()
    assert "Audit record" in page and weights in page


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_model_card_front_matter(run_dir, results):
    meta = _front_matter((run_dir / "model" / "README.md").read_text())
    audit = json.loads((run_dir / "audit.json").read_text())
    assert "unlearnkit" in meta["tags"] and meta["library_name"] == "transformers"
    assert "base_model" not in meta  # the built-in tiny base is no Hub model id
    u = meta["unlearning"]
    assert u["method"] == "npo" and u["parameters"] == results["method"]["params"] and u["base"] == "tiny"
    assert u["forget_set_sha256"] == audit["data"]["examples"]["forget"]["sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", u["forget_set_sha256"])
    unlearned = results["models"]["unlearned"]
    for name in ("forget_quality", "model_utility", "forget_Q_A_Prob"):
        assert u["metrics"]["unlearned"][name] == {"value": unlearned["aggregates"][name],
                                                   "interval_95": unlearned["intervals"][name]}
    index = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert index["model_utility"] == unlearned["aggregates"]["model_utility"]


def test_model_card_names_a_hub_base_and_the_tofu_dataset(run_dir, results):
    cfg = parse_config({**CONFIG, "task": {"source": "tofu", "options": {"split": "forget01"}},
                        "model": {"base": "HuggingFaceTB/SmolLM2-135M", "max_length": 96}, "output_dir": "x"})
    meta = card_metadata(cfg, results, json.loads((run_dir / "audit.json").read_text()))
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M" and meta["datasets"] == ["locuslab/TOFU"]


def test_export_writes_the_model_folder_with_card_and_record(run_dir, tmp_path):
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", str(run_dir), "--to", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").read_bytes() == (run_dir / "model" / "model.safetensors").read_bytes()
    assert (out / "README.md").read_text() == (run_dir / "model" / "README.md").read_text()
    assert (out / "audit.json").exists() and (out / "config.json").exists()

    again = runner.invoke(app, ["export", str(run_dir), "--to", str(out)])
    assert again.exit_code == 2
    assert len(again.output.strip().splitlines()) == 1 and "not an empty folder" in again.output
