"""End to end: a whole run on a small synthetic task and on real TOFU files, with the tiny base.

The target/retain preparation is shared by the tests of this module through the session's unlearnkit cache
(tests/conftest.py), so only the first test pays for it.
"""

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import unlearnkit
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.npo import NPO

TOFU_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tofu"

SMALL = {
    "task": {"source": "synthetic", "options": {"n_people": 8, "forget_people": 2, "holdout_people": 2}},
    "model": {"base": "tiny", "max_length": 96},
    "prepare": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5},
    "method": {"name": "npo"},
    "train": {"epochs": 2, "batch_size": 4, "learning_rate": 5e-4, "warmup_steps": 0, "schedule": "constant"},
    "eval": {"batch_size": 32, "max_new_tokens": 12},
}


def small_config(tmp_path: Path, name: str = "run", **changes) -> dict:
    cfg = copy.deepcopy(SMALL)
    cfg["output_dir"] = str(tmp_path / name)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def test_run_writes_a_complete_run_directory(tmp_path):
    result = unlearnkit.unlearn(small_config(tmp_path), progress=False)
    run_dir = tmp_path / "run"
    assert result.run_dir == run_dir and not (tmp_path / "run.partial").exists()
    assert sorted(p.name for p in run_dir.iterdir()) == ["audit.json", "config.yaml", "model", "report.html", "results.json"]

    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["models"]) == {"unlearned", "target", "retain"}
    forget_size = results["task"]["eval_forget"]
    for model in results["models"].values():
        assert len(model["per_example"]["forget_Q_A_Prob"]) == forget_size
        assert len(model["generations"]["forget"]) == forget_size
    retain = results["models"]["retain"]["aggregates"]
    assert retain["forget_quality"] == pytest.approx(1.0) and retain["privleak"] == pytest.approx(0.0)
    assert results["training"]["steps"] == len(results["training"]["logs"]) > 0

    weights = load_file(run_dir / "model" / "model.safetensors")
    assert weights and all(torch.isfinite(t).all() for t in weights.values())
    html = (run_dir / "report.html").read_text()
    assert "forget_quality" in html and "model_utility" in html and "<svg" in html


def test_representation_metrics_of_a_run(tmp_path):
    """The run's representation section, computed from features pooled in each model's scoring pass, equals the
    report of features extracted afresh from the saved unlearned model and the prepared target and retain models."""
    from unlearnkit.config import parse_config
    from unlearnkit.data.formatting import QAFormatter
    from unlearnkit.data.sources import load_task
    from layer_features import layer_features
    from unlearnkit.evaluation.metrics.representation import representation_report
    from unlearnkit.models.load import load_causal_lm
    from unlearnkit.models.prepare import resolve_models

    config = small_config(tmp_path, representation={"layer": 2})
    results = unlearnkit.unlearn(config, progress=False).results
    rep = results["representation"]
    assert rep["layer"] == 2 and set(rep) == {"layer", "pool", "unlearned", "target"}
    assert "Representations" in (tmp_path / "run" / "report.html").read_text()

    cfg = parse_config(config)
    task = load_task(cfg.task.source, **cfg.task.options)
    models = resolve_models(cfg, task, progress=False)
    features = {}
    for who, folder in (("unlearned", tmp_path / "run" / "model"), ("target", models.target),
                        ("retain", models.retain)):
        model, tokenizer = load_causal_lm(folder)
        formatter = QAFormatter(tokenizer, max_length=cfg.model.max_length, template=cfg.model.template)
        features[who] = {split: layer_features(model, formatter, examples, layer=2, batch_size=1)
                         for split, examples in (("forget", task.eval_forget), ("retain", task.eval_retain),
                                                 ("holdout", task.holdout))}
    for who in ("unlearned", "target"):
        expected = representation_report(features[who], features["retain"])
        assert rep[who] == pytest.approx(expected, abs=1e-4)
        for split in ("forget", "retain", "holdout"):
            assert 0.0 <= rep[who][f"cka_linear_{split}"] <= 1.0 + 1e-9


def test_a_representation_layer_out_of_range_stops_the_run_before_training(tmp_path):
    with pytest.raises(UnlearnkitError, match="layer 9 out of range.*use -5..4"):
        unlearnkit.unlearn(small_config(tmp_path, representation={"layer": 9}), progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_same_config_twice_gives_identical_numbers_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    first = unlearnkit.unlearn(small_config(tmp_path, "a"), progress=False).results

    calls = {"n": 0}
    original = NPO.loss

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # 20 forget examples, batch 4: step 2 of epoch 2, after epoch-1 was checkpointed
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(NPO, "loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        unlearnkit.unlearn(small_config(tmp_path, "b"), progress=False)
    assert (tmp_path / "b.partial" / "checkpoints" / "epoch-1").is_dir() and not (tmp_path / "b").exists()
    with pytest.raises(UnlearnkitError, match="--resume"):
        unlearnkit.unlearn(small_config(tmp_path, "b"), progress=False)
    monkeypatch.setattr(NPO, "loss", original)
    resumed = unlearnkit.unlearn(small_config(tmp_path, "b"), resume=True, progress=False).results

    assert resumed["models"]["unlearned"]["aggregates"] == first["models"]["unlearned"]["aggregates"]
    assert resumed["models"]["unlearned"]["per_example"] == first["models"]["unlearned"]["per_example"]
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unlearning_moves_the_forget_set_away_from_the_target(tmp_path):
    """Gradient ascent on the forget set must lower the forget answers' probability below the target's."""
    results = unlearnkit.unlearn(small_config(tmp_path, method__name="ga", train__learning_rate=1e-3),
                                 progress=False).results
    unlearned = results["models"]["unlearned"]["aggregates"]
    target = results["models"]["target"]["aggregates"]
    assert unlearned["forget_Q_A_Prob"] < 0.5 * target["forget_Q_A_Prob"]


@pytest.mark.skipif(not (TOFU_DIR / "forget01.json").exists(), reason="needs ../shared/data/tofu")
def test_tofu_forget01_with_the_tiny_base(tmp_path):
    cfg = small_config(tmp_path, task={"source": "tofu", "options": {"split": "forget01", "data_dir": str(TOFU_DIR),
                                                                       "retain_authors": 2}},
                       prepare__epochs=1, train__epochs=1)
    results = unlearnkit.unlearn(cfg, progress=False).results
    assert results["task"]["forget"] == 40 and results["task"]["holdout"] == 40
    assert results["task"]["real_authors"] == 100 and results["task"]["world_facts"] == 117
    for name in ("forget_quality", "model_utility", "privleak", "extraction_strength"):
        assert results["models"]["unlearned"]["aggregates"][name] is not None


def test_evaluation_during_training_keeps_the_best_checkpoint(tmp_path):
    """Monitor every 2 steps; keep the checkpoint with the lowest forget Q_A_Prob (gradient ascent lowers it
    monotonically here, so the kept model is an evaluated one and its numbers are the curve's best)."""
    cfg = small_config(tmp_path, method__name="ga", train__learning_rate=1e-3, train__epochs=2,
                       monitor={"every_steps": 2, "every_epoch": False, "metrics": ["forget_Q_A_Prob", "model_utility"],
                                "best": {"metric": "forget_Q_A_Prob", "mode": "min", "at_least": {"model_utility": 0.0}}})
    results = unlearnkit.unlearn(cfg, progress=False).results
    curve = results["monitor"]["curve"]
    total = results["training"]["steps"]
    assert [p["step"] for p in curve] == sorted({*range(2, total + 1, 2), total})
    best = results["monitor"]["best"]
    assert results["monitor"]["selected"] == "best"
    assert best["value"] == min(p["forget_Q_A_Prob"] for p in curve)
    kept = results["models"]["unlearned"]["aggregates"]["forget_Q_A_Prob"]
    assert kept == pytest.approx(best["value"], abs=1e-6)  # the saved best model, re-evaluated, gives its number
    assert "Evaluation during training" in (tmp_path / "run" / "report.html").read_text()
    assert not (tmp_path / "run" / "best").exists()


def test_monitor_with_an_unknown_metric_is_rejected_before_anything_is_written(tmp_path):
    cfg = small_config(tmp_path, monitor={"metrics": ["forget_qualty"]})
    with pytest.raises(UnlearnkitError, match="forget_qualty"):
        unlearnkit.unlearn(cfg, progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_two_processes_through_the_cli_equal_one_process_with_accumulation(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m unlearnkit run` (gloo on CPU) against one process with
    gradient accumulation 2: same training steps, same evaluation (shared across the two processes)."""
    import os
    import subprocess
    import sys

    import yaml

    single = unlearnkit.unlearn(small_config(tmp_path, "one", train__gradient_accumulation_steps=2),
                                progress=False).results  # also prepares the models in the shared cache
    cfg = small_config(tmp_path, "two")
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "-m", "unlearnkit", "run", str(tmp_path / "two.yaml"), "--quiet"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    double = json.loads((tmp_path / "two" / "results.json").read_text())
    assert [round(log["loss"], 5) for log in double["training"]["logs"]] == \
        [round(log["loss"], 5) for log in single["training"]["logs"]]
    for name, value in single["models"]["unlearned"]["aggregates"].items():
        assert double["models"]["unlearned"]["aggregates"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
