"""`unlearnkit run` with a classifier config: the config (round trip, one-line errors), and a small run whose
results.json is recomputed here from the run's saved logits, independently of the library's scorers.

The recomputations follow the definitions, not unlearnkit's code: UA/RA/TA as arg-max accuracies (OPTML
Unlearn-Sparse / Unlearn-Saliency, research/metrics.md §4); MIA-Efficacy with scikit-learn's SVC fitted as OPTML's
``evaluation/SVC_MIA.py`` (``SVC(C=3, gamma="auto", kernel="rbf")`` on the true-class probability of the first |test|
retain examples and the test examples); the per-example ε by the dense (models × rules) scorer of
tests/evaluation/dense_epsilon.py (google-deepmind/unlearning_evaluation ``metric.py`` as it computes), its bucket
points 2^−j below ⌈ln(N − 1)⌉ and the final score F × RA/RA_ref × TA/TA_ref (Triantafillou et al. 2024,
arXiv:2406.09073); KLOM by ``np.digitize`` and ``scipy.stats.entropy`` per point (RoyRin/data-unlearning-bench
``src/eval.py``, arXiv:2410.23232). The saved logits themselves are checked against the cached ensembles.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file
from scipy.special import logsumexp, softmax
from scipy.stats import entropy
from sklearn.svm import SVC
from typer.testing import CliRunner

from unlearnkit.classifier.config import DEMO_PARAMS, ClassifierRunConfig, demo_config, parse_classifier_config
from unlearnkit.classifier.data import forget_indices, load_task, retain_indices
from unlearnkit.classifier.ensemble import Recipe, train_ensemble
from unlearnkit.classifier.models import ModelOptions
from unlearnkit.classifier.unlearn import PARAMS
from unlearnkit.cli import app
from unlearnkit.config import RunConfig, dump_config, load_any_config, parse_config
from unlearnkit.errors import ConfigError, UnlearnkitError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from dense_epsilon import dense_epsilons  # noqa: E402

runner = CliRunner()
MEMBERS = 4
SMALL = {
    "task": {"source": "digits", "forget": {"kind": "random", "percent": 1, "seed": 1}},
    "model": {"kind": "mlp", "width": 16, "recipe": {"epochs": 2, "batch_size": 64}},
    "ensemble": {"members": MEMBERS, "seed": 3},
    "methods": [{"name": "finetune", "params": {"epochs": 1}}, {"name": "ga", "params": {"lr": 0.05}}],
    "eval": {"n_resamples": 200},
}


# --- the config ---------------------------------------------------------------------------------------------------

def test_a_classifier_config_round_trips_through_yaml(tmp_path):
    cfg = parse_classifier_config(SMALL)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    again = load_any_config(path, {"ensemble.members": 5})
    assert isinstance(again, ClassifierRunConfig)
    assert again.model_dump() == {**cfg.model_dump(), "ensemble": {"members": 5, "seed": 3}}
    assert [r.row for r in again.runs] == ["finetune", "ga"]
    assert again.ensemble.seeds == [3, 4, 5, 6, 7] and again.ensemble.reference_seeds == [8, 9, 10, 11, 12]


def test_llm_configs_are_read_as_before(tmp_path):
    path = tmp_path / "llm.yaml"
    path.write_text(dump_config(parse_config({"method": {"name": "simnpo"}}, parameters=False)))
    cfg = load_any_config(path, parameters=False)  # the structure: the LLM method registry is not imported
    assert isinstance(cfg, RunConfig) and cfg.method.name == "simnpo" and cfg.task.source == "synthetic"


@pytest.mark.parametrize("change, needle", [
    ({"methods": [{"name": "npo"}]}, "unknown classifier method 'npo'"),
    ({"methods": [{"name": "ga", "params": {"lr": -1}}]}, "methods.0.params"),
    ({"methods": [{"name": "ga", "params": {"speed": 1}}]}, "unknown option 'speed'"),
    ({"methods": [{"name": "ga"}, {"name": "ga"}]}, "distinct label"),
    ({"methods": [{"name": "ga", "label": "original"}]}, "reserved"),
    ({"method": {"name": "ga"}}, "exactly one"),
    ({"methods": []}, "exactly one"),
    ({"ensemble": {"members": 2}}, "ensemble.members"),
    ({"ensemble": {"size": 4}}, "unknown config key 'ensemble.size'"),
    ({"model": {"kind": "vit"}}, "model.kind"),
    ({"model": {"recipe": {"epochs": 0}}}, "model.recipe.epochs"),
    ({"task": {"source": "digits", "forget": {"kind": "class"}}}, "needs label"),
    ({"task": {"source": "digits", "options": {"test_fraction": 0.7}}}, "test_fraction"),
    ({"track": "classifier", "task": {"source": "cifar"}}, "task.source"),
])
def test_bad_classifier_configs_are_one_line_errors(change, needle):
    with pytest.raises(ConfigError) as err:
        parse_classifier_config({**SMALL, **change})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_torchvision_task_without_torchvision_is_refused_at_load(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchvision" else real(name, *a))
    data = {**SMALL, "task": {"source": "torchvision", "options": {"name": "CIFAR10", "root": "/nowhere"}}}
    with pytest.raises(ConfigError, match="needs torchvision, which is not installed"):
        parse_classifier_config(data)


def test_llm_commands_refuse_a_classifier_config():
    with pytest.raises(ConfigError, match="classifier task.*unlearnkit run"):
        parse_config({"task": {"source": "digits"}})


def test_the_cli_reports_a_bad_classifier_config_in_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "methods": [{"name": "nope"}], "output_dir": str(tmp_path / "run")}))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "nope" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_an_unknown_demo_track_is_a_one_line_error():
    result = runner.invoke(app, ["demo", "--track", "vision"])
    assert result.exit_code == 2 and result.stderr.strip() == "error: --track 'vision': use llm (the default) or classifier"


def test_the_demo_runs_every_method_of_the_registry():
    cfg = demo_config("runs/x")
    assert cfg.task.source == "digits" and cfg.model.kind == "mlp" and cfg.ensemble.members == 64
    complete = [name for name, params in PARAMS.items()  # a method added later without defaults cannot be run
                if all(k in DEMO_PARAMS.get(name, {}) or not f.is_required() for k, f in params.model_fields.items())]
    assert [r.name for r in cfg.runs] == complete
    assert {"retrain", "finetune", "ga", "random_labels", "neggrad_plus", "l1_sparse", "prune", "salun", "scrub",
            "boundary_shrink"} <= set(complete)


# --- a small run ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "output_dir": str(folder / "out")}))
    result = runner.invoke(app, ["run", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    out = folder / "out"
    return out, json.loads((out / "results.json").read_text()), result.stdout


def naive_scores(logits, labels):
    """(members, 4): UA, RA, TA, MIA-Efficacy of each member, from the definitions."""
    rows = []
    for m in range(len(logits["test"])):
        acc = {s: 100.0 * np.mean([int(np.argmax(row) == y) for row, y in zip(logits[s][m], labels[s])])
               for s in ("forget", "retain", "test")}
        conf = {s: softmax(logits[s][m].astype(np.float64), axis=1)[np.arange(len(labels[s])), labels[s]]
                for s in ("forget", "retain", "test")}
        n_test = len(labels["test"])
        attack = SVC(C=3, gamma="auto", kernel="rbf").fit(
            np.concatenate([conf["retain"][:n_test], conf["test"]])[:, None],
            np.concatenate([np.ones(n_test), np.zeros(n_test)]))
        mia = 100.0 * np.mean(attack.predict(conf["forget"][:, None]) == 0)
        rows.append([100.0 - acc["forget"], acc["retain"], acc["test"], mia])
    return np.array(rows)


def naive_confidence(logits, labels):
    """log p_y − log Σ_{y'≠y} p_{y'} (the competition's logit-scaled confidence; LiRA's score.py)."""
    out = np.empty(logits.shape[:2])
    for m in range(logits.shape[0]):
        for i, y in enumerate(labels):
            row = logits[m, i].astype(np.float64)
            p = np.exp(row - row.max())
            p /= p.sum()
            out[m, i] = math.log(p[y] + 1e-45) - math.log(p.sum() - p[y] + 1e-45)
    return out


def naive_klom(unlearned, retrained):
    """One point's binned KL of margins, as data-unlearning-bench's compute_binned_KL_div."""
    unlearned, retrained = np.clip(unlearned, -100, 100), np.clip(retrained, -100, 100)
    lo, hi = min(unlearned.min(), retrained.min()), max(unlearned.max(), retrained.max())
    if lo >= hi:
        hi = lo + 1
    edges = np.linspace(lo, hi, 21)
    p = np.bincount(np.digitize(unlearned, edges), minlength=22)[1:21].astype(float)
    q = np.bincount(np.digitize(retrained, edges), minlength=22)[1:21].astype(float)
    p, q = p / max(p.sum(), 1), q / max(q.sum(), 1)
    q = np.where(p > 0, np.maximum(q, 1e-5), q)
    return entropy(p, q)


def naive_margin(logits, labels):
    out = np.empty(logits.shape[:2])
    for m in range(logits.shape[0]):
        for i, y in enumerate(labels):
            row = logits[m, i].astype(np.float64)
            out[m, i] = row[y] - logsumexp(np.delete(row, y))
    return out


def test_the_run_directory_is_complete(run):
    out, results, stdout = run
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "logits", "report.html", "results.json"]
    assert sorted(p.name for p in (out / "logits").iterdir()) == [
        "finetune.safetensors", "ga.safetensors", "original.safetensors", "reference.safetensors"]
    assert not out.with_name("out.partial").exists()
    assert isinstance(load_any_config(out / "config.yaml"), ClassifierRunConfig)
    assert results["track"] == "classifier" and set(results["methods"]) == {"finetune", "ga"}
    assert "| 1 |" in stdout and "run directory:" in stdout


def test_the_saved_logits_are_the_cached_ensembles(run):
    out, results, _ = run
    task = load_task("digits")
    forget = forget_indices(task, {"kind": "random", "percent": 1, "seed": 1})
    assert results["task"]["forget_indices"] == forget.tolist()
    options, recipe = ModelOptions(kind="mlp", width=16), Recipe(epochs=2, batch_size=64)
    original = train_ensemble(task, options, recipe, [3, 4, 5, 6])  # read back from the run's cache
    reference = train_ensemble(task, options, recipe, [7, 8, 9, 10], forget=forget)
    saved = {who: load_file(out / "logits" / f"{who}.safetensors") for who in ("original", "reference")}
    retain = retain_indices(task, forget)
    for who, ensemble in (("original", original), ("reference", reference)):
        np.testing.assert_allclose(saved[who]["forget"], ensemble.logits(task.train.x[forget]).numpy(), atol=1e-5)
        np.testing.assert_allclose(saved[who]["retain"], ensemble.logits(task.train.x[retain]).numpy(), atol=1e-5)
        np.testing.assert_allclose(saved[who]["test"], ensemble.logits(task.test.x).numpy(), atol=1e-5)


@pytest.mark.parametrize("row", ["finetune", "ga", "original"])
def test_every_number_recomputes_from_the_saved_logits(run, row):
    out, results, _ = run
    task = load_task("digits")
    forget = np.array(results["task"]["forget_indices"])
    retain = retain_indices(task, forget)
    labels = {"forget": task.train.y[forget], "retain": task.train.y[retain], "test": task.test.y}
    logits = load_file(out / "logits" / f"{row}.safetensors")
    reference = load_file(out / "logits" / "reference.safetensors")
    got = results["original"] if row == "original" else results["methods"][row]
    agg = got["aggregates"]

    mine, theirs = naive_scores(logits, labels), naive_scores(reference, labels)
    np.testing.assert_allclose([agg[k] for k in ("unlearning_accuracy", "retain_accuracy", "test_accuracy",
                                                 "mia_efficacy")], mine.mean(0), atol=1e-9)
    np.testing.assert_allclose(results["reference"]["aggregates"]["test_accuracy"], theirs[:, 2].mean(), atol=1e-9)
    assert agg["avg_gap"] == pytest.approx(np.mean(np.abs(mine.mean(0) - theirs.mean(0))), abs=1e-9)

    eps = dense_epsilons(naive_confidence(logits["forget"], labels["forget"]),
                         naive_confidence(reference["forget"], labels["forget"]))
    np.testing.assert_array_equal(got["per_example"]["epsilon"], eps)
    top = math.ceil(math.log(MEMBERS - 1))
    points = [2.0 ** -math.floor(e / 0.5) if e < top else 0.0 for e in eps]
    assert agg["forget_quality"] == pytest.approx(np.mean(points), abs=1e-12)
    assert agg["final_score"] == pytest.approx(np.mean(points) * mine[:, 1].mean() / theirs[:, 1].mean()
                                               * mine[:, 2].mean() / theirs[:, 2].mean(), abs=1e-12)

    for split in ("forget", "test"):
        unlearned, retrained = naive_margin(logits[split], labels[split]), naive_margin(reference[split], labels[split])
        expected = [naive_klom(unlearned[:, i], retrained[:, i]) for i in range(len(labels[split]))]
        np.testing.assert_allclose(np.array(got["per_example"][f"klom_{split}"], dtype=float), expected,
                                   rtol=1e-9, atol=1e-12)
        assert agg[f"klom_{split}"] == pytest.approx(np.nanmean(expected), rel=1e-9)
    low, high = got["intervals"]["test_accuracy"]
    assert low <= agg["test_accuracy"] <= high


def test_the_leaderboard_ranks_by_final_score(run):
    _, results, _ = run
    finals = [results["methods"][r]["aggregates"]["final_score"] for r in results["leaderboard"]]
    assert finals == sorted(finals, reverse=True) and sorted(results["leaderboard"]) == ["finetune", "ga"]
    assert results["methods"]["finetune"]["params"]["epochs"] == 1
    assert results["methods"]["finetune"]["seconds"] > 0


def test_the_report_has_the_tables_and_the_epsilon_histograms(run):
    out, results, _ = run
    page = (out / "report.html").read_text()
    assert 'id="leaderboard-table"' in page and page.count('class="method-table"') == 3  # 2 methods + original
    for row in ("finetune", "ga", "original"):
        assert f'id="method-{row}"' in page and f'id="plot-eps-{row}"' in page
        assert f"{results['methods'].get(row, results['original'])['aggregates']['forget_quality']:.3f}" in page
    assert "<script" not in page


def test_an_existing_run_directory_is_refused_before_anything_runs(run):
    out, _, _ = run
    cfg = parse_classifier_config({**SMALL, "output_dir": str(out)})
    from unlearnkit.classifier.pipeline import run_classifier

    with pytest.raises(UnlearnkitError, match="already exists"):
        run_classifier(cfg)


def test_a_worst_case_forget_set_is_selected_on_the_original_members(tmp_path):
    """``forget: {kind: worst_case}`` in a run: the set is the one worst_case.forget_set selects on the run's original
    ensemble (tiny selection settings: the selection itself is tested in test_worst_case.py)."""
    from unlearnkit.classifier.worst_case import forget_set

    forget_options = {"kind": "worst_case", "percent": 1,
                      "selection": {"select_epochs": 1, "unlearn_epochs": 1, "members": 1, "binarize_every": 1}}
    config = {**SMALL, "task": {"source": "digits", "forget": forget_options},
              "methods": [{"name": "finetune", "params": {"epochs": 1}}], "eval": {"intervals": False},
              "output_dir": str(tmp_path / "out")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(tmp_path / "config.yaml"), "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    task = load_task("digits")
    original = train_ensemble(task, ModelOptions(kind="mlp", width=16), Recipe(epochs=2, batch_size=64), [3, 4, 5, 6])
    assert results["task"]["forget_indices"] == sorted(forget_set(task, forget_options, original).tolist())
