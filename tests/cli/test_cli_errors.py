"""Bad input at the command line: one line on stderr naming the problem and the fix, exit status 2, and no run
directory (final or partial) left behind. One test goes through a real subprocess and the installed entry point;
the rest use typer's in-process runner."""

import json
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app

runner = CliRunner()


def write_config(tmp_path: Path, data: dict) -> Path:
    data.setdefault("output_dir", str(tmp_path / "run"))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_clean_failure(result, tmp_path: Path, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_missing_tofu_folder(tmp_path):
    cfg = write_config(tmp_path, {"task": {"source": "tofu", "options": {"split": "forget01"}}})
    result = runner.invoke(app, ["run", str(cfg), "--data-dir", str(tmp_path / "no-such-tofu")])
    assert_clean_failure(result, tmp_path, "no-such-tofu")


def test_model_folder_without_tokenizer(tmp_path):
    """A folder with a model's config and safetensors weights but no tokenizer files."""
    from unlearnkit.models.tiny import build_tiny

    model_dir = tmp_path / "model"
    model, _ = build_tiny(["a b c d e f g"], seed=0, vocab_size=64, hidden_size=16, layers=1, heads=2)
    model.save_pretrained(model_dir, safe_serialization=True)
    cfg = write_config(tmp_path, {"model": {"target": str(model_dir), "retain": str(model_dir)},
                                  "task": {"options": {"n_people": 10, "forget_people": 2, "holdout_people": 2}}})
    result = runner.invoke(app, ["run", str(cfg)])
    assert_clean_failure(result, tmp_path, "no tokenizer", str(model_dir))


def test_empty_forget_set(tmp_path):
    forget = tmp_path / "forget.jsonl"
    forget.write_text("")
    retain = write_jsonl(tmp_path / "retain.jsonl", [{"question": "Q1?", "answer": "A1."}])
    cfg = write_config(tmp_path, {"task": {"source": "custom", "options": {"forget": str(forget), "retain": str(retain)}}})
    result = runner.invoke(app, ["run", str(cfg)])
    assert_clean_failure(result, tmp_path, "forget")


def test_overlapping_forget_and_retain(tmp_path):
    rows = [{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(4)]
    forget = write_jsonl(tmp_path / "forget.jsonl", rows[:2])
    retain = write_jsonl(tmp_path / "retain.jsonl", rows[1:])
    cfg = write_config(tmp_path, {"task": {"source": "custom", "options": {"forget": str(forget), "retain": str(retain)}}})
    result = runner.invoke(app, ["run", str(cfg)])
    assert_clean_failure(result, tmp_path, "Q1?")


def test_unknown_method(tmp_path):
    cfg = write_config(tmp_path, {"method": {"name": "forgetall"}})
    result = runner.invoke(app, ["run", str(cfg)])
    assert_clean_failure(result, tmp_path, "forgetall", "npo")


def test_unknown_method_parameter(tmp_path):
    cfg = write_config(tmp_path, {"method": {"name": "npo", "params": {"betta": 0.2}}})
    result = runner.invoke(app, ["run", str(cfg)])
    assert_clean_failure(result, tmp_path, "betta", "beta")


def test_bad_method_parameter_value_stops_before_the_pipeline(tmp_path, monkeypatch):
    """beta: 0 is refused when the config is read, before the pipeline starts (no model, data or evaluation)."""
    def pipeline_started(*args, **kwargs):
        raise AssertionError("the pipeline started")

    monkeypatch.setattr("unlearnkit.pipeline.run", pipeline_started)
    cfg = write_config(tmp_path, {"method": {"name": "npo", "params": {"beta": 0}}})
    result = runner.invoke(app, ["run", str(cfg)])
    assert_clean_failure(result, tmp_path, "method.params.beta: must be > 0, got 0", "float", "default 0.1")


def test_unknown_config_key(tmp_path):
    cfg = write_config(tmp_path, {"train": {"learning_rat": 1e-4}})
    result = runner.invoke(app, ["run", str(cfg)])
    assert_clean_failure(result, tmp_path, "train.learning_rat", "learning_rate")


def test_bad_set_override(tmp_path):
    cfg = write_config(tmp_path, {})
    result = runner.invoke(app, ["run", str(cfg), "--set", "train.epochs"])
    assert_clean_failure(result, tmp_path, "KEY=VALUE")


def test_missing_config_file(tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert_clean_failure(result, tmp_path, "nope.yaml")


def test_existing_output_dir_is_not_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    cfg = write_config(tmp_path, {})
    result = runner.invoke(app, ["run", str(cfg)])
    assert result.exit_code == 2 and "already exists" in result.stderr


def test_entry_point_exit_status_in_a_real_process(tmp_path):
    cfg = write_config(tmp_path, {"method": {"name": "forgetall"}})
    proc = subprocess.run([sys.executable, "-m", "unlearnkit", "run", str(cfg)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    # caught when the config is read: the message names the file and the key
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {cfg}: method.name: unknown method 'forgetall'")


def test_methods_lists_every_registered_method():
    from unlearnkit.methods.registry import available

    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for name in available():
        assert f"\n{name} " in "\n" + result.stdout
