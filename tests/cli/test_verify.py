"""``unlearnkit verify``: a run is checked against its audit.json (issue 19, part 3).

One small run on a task read from files (``custom`` source: a forget, a retain and a holdout JSON Lines file) is made
once for the module. The digests of the record are checked against SHA-256 computed here with hashlib over the
files' bytes; verify must pass on the untouched run and fail, naming the file, after one byte of the weight file
changes (in a copy of the run) or one forget example changes in the data file (restored afterwards).
"""

import hashlib
import json
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import unlearnkit
from unlearnkit.cli import app
from unlearnkit.config import load_config
from unlearnkit.data.synthetic import make_synthetic_task

runner = CliRunner()


def _write_jsonl(path, examples):
    rows = []
    for e in examples:
        row = asdict(e)
        row["perturbed_answer"] = list(row.pop("perturbed_answers"))
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    task = make_synthetic_task(n_people=8, forget_people=2, holdout_people=2)
    _write_jsonl(root / "forget.jsonl", task.forget[:6])
    _write_jsonl(root / "retain.jsonl", task.retain[:24])
    _write_jsonl(root / "holdout.jsonl", task.holdout[:6])
    config = {
        "task": {"source": "custom", "options": {name: str(root / f"{name}.jsonl")
                                                 for name in ("forget", "retain", "holdout")}},
        "model": {"base": "tiny", "max_length": 96},
        "prepare": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 0},
        "method": {"name": "npo"},
        "train": {"epochs": 1, "batch_size": 3, "learning_rate": 5e-4, "warmup_steps": 0, "schedule": "constant"},
        "eval": {"batch_size": 32, "max_new_tokens": 8, "n_resamples": 100},
        "output_dir": str(root / "run"),
    }
    return unlearnkit.unlearn(config, progress=False).run_dir


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_record_holds_the_digests_of_the_data_weights_and_config(run_dir):
    record = json.loads((run_dir / "audit.json").read_text())
    config = load_config(run_dir / "config.yaml")
    for name in ("forget", "retain", "holdout"):
        path = config.task.options[name]
        assert record["data"]["files"][str(Path(path).resolve())] == _sha256(Path(path))
    assert record["models"]["unlearned"]["weights"] == {"model.safetensors": _sha256(run_dir / "model" / "model.safetensors")}
    for role in ("target", "retain", "base"):
        entry = record["models"][role]
        assert entry["weights"] and all(_sha256(Path(entry["path"]) / name) == digest
                                        for name, digest in entry["weights"].items())
    assert record["config"]["sha256"] == _sha256(run_dir / "config.yaml")
    assert record["data"]["examples"]["forget"]["count"] == 6 and record["seed"] == 0
    results = json.loads((run_dir / "results.json").read_text())
    unlearned = results["models"]["unlearned"]
    assert record["results"]["forget_set"]["forget_Q_A_Prob"] == unlearned["aggregates"]["forget_Q_A_Prob"]
    assert record["results"]["headline"]["unlearned"]["forget_quality"] == {
        "value": unlearned["aggregates"]["forget_quality"], "interval": unlearned["intervals"]["forget_quality"]}
    assert record["versions"]["torch"] == torch.__version__ and record["started"] <= record["finished"]
    head = subprocess.run(["git", "-C", str(Path(unlearnkit.__file__).parent), "rev-parse", "HEAD"], check=False,
                          capture_output=True, text=True)
    if head.returncode == 0:  # the tests run from a checkout: its commit is recorded
        assert record["git_commit"]["commit"] == head.stdout.strip()


def test_verify_passes_on_an_untouched_run(run_dir):
    result = runner.invoke(app, ["verify", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "match the audit record" in result.output


def test_verify_recompute_evaluates_afresh_and_passes(run_dir):
    result = runner.invoke(app, ["verify", str(run_dir), "--recompute", "--quiet"])
    assert result.exit_code == 0, result.output


def test_verify_names_a_weight_file_with_one_changed_byte(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    weights = copy / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # the last byte: inside the last tensor's data, so the file still loads
    weights.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(copy), "--quiet"])
    assert result.exit_code == 1
    mismatches = [line for line in result.stdout.splitlines() if line.startswith("mismatch:")]
    assert any(str(weights) in line and "unlearned model weights" in line for line in mismatches), result.output
    assert not any("config.yaml" in line or ".jsonl" in line for line in mismatches)


def test_verify_names_the_data_file_after_one_forget_example_changes(run_dir):
    config = load_config(run_dir / "config.yaml")
    forget_file = Path(config.task.options["forget"])
    original = forget_file.read_text()
    rows = [json.loads(line) for line in original.splitlines()]
    rows[2]["answer"] = rows[2]["answer"].replace(".", " (edited).")
    try:
        forget_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        result = runner.invoke(app, ["verify", str(run_dir), "--quiet"])
    finally:
        forget_file.write_text(original)
    assert result.exit_code == 1
    mismatches = [line for line in result.stdout.splitlines() if line.startswith("mismatch:")]
    named = str(forget_file.resolve())
    assert any(line.startswith(f"mismatch: {named}: SHA-256 differs") for line in mismatches), result.output
    assert any("the forget examples differ" in line and named in line for line in mismatches), result.output
    assert not any("model.safetensors" in line for line in mismatches)


def test_verify_of_a_folder_without_a_record_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 2 and "has no audit.json" in result.output
