"""Malformed input files at the command line (issue #20): a non-UTF-8 config, YAML and JSON syntax errors, a null
answer, a missing run folder, a missing or damaged model folder (``eval --model``). Each is one line on stderr, ``error: <what>: <fix>``, naming the file as typed and the
line and column where there is one; exit status 2; no traceback; no run directory left behind. None of them trains:
each fails while the inputs are read. The paths are typed relative to the test's folder, as a user would."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app

runner = CliRunner()

GOOD_ROW = {"question": "Who wrote it?", "answer": "Ann Lee."}


def _config(task: dict | None = None) -> str:
    data = {"output_dir": "run"}
    if task is not None:
        data["task"] = task
    return yaml.safe_dump(data)


def _custom(forget: str) -> str:
    return _config({"source": "custom", "options": {"forget": forget, "retain": "data/retain.jsonl"}})


def _tofu_folder(forget01: str) -> None:
    """A TOFU folder holding every file forget01 needs; forget01.json (read first) is the one given."""
    folder = Path("tofu")
    folder.mkdir()
    for name in ("retain99", "forget01_perturbed", "retain_perturbed", "real_authors_perturbed",
                 "world_facts_perturbed"):
        (folder / f"{name}.json").write_text(json.dumps(GOOD_ROW) + "\n")
    (folder / "forget01.json").write_text(forget01)


def _write(path: str, content: str | bytes) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        Path(path).write_bytes(content)
    else:
        Path(path).write_text(content)


def _setup_custom(forget_path: str, forget_content: str):
    def setup():
        _write("data/retain.jsonl", json.dumps(GOOD_ROW) + "\n")
        _write(forget_path, forget_content)
        _write("config.yaml", _custom(forget_path))
    return setup


def _setup_tofu(forget01: str):
    def setup():
        _tofu_folder(forget01)
        _write("config.yaml", _config({"source": "tofu", "options": {"split": "forget01"}}))
    return setup


def _setup_config(content: str | bytes):
    return lambda: _write("config.yaml", content)


def _setup_run_dir_with_results(results: str):
    def setup():
        _write("runs/a/results.json", results)
        _write("runs/b/results.json", "{}")
    return setup


def _setup_run_dir_with_config(config: str):
    def setup():
        _write("runs/a/config.yaml", config)
        _write("runs/a/results.json", "{}")
        Path("runs/a/model").mkdir()
    return setup


def _setup_model(damage=None):
    """A tiny saved model in models/m (config, tokenizer, safetensors) and an eval config; ``damage(folder)`` breaks
    it. Without ``damage`` only the config is written (for the missing-folder cases)."""
    def setup():
        _write("config.yaml", _config({"source": "synthetic_corpus",
                                       "options": {"n_people": 4, "forget_people": 1, "holdout_people": 1}}))
        if damage is None:
            return
        from unlearnkit.models.load import save_model
        from unlearnkit.models.tiny import build_tiny

        model, tokenizer = build_tiny(["the cat sat on the mat"] * 4, vocab_size=300, hidden_size=32, layers=1, heads=2)
        save_model(model, tokenizer, Path("models/m"))
        damage(Path("models/m"))
    return setup


def _garbage_config(folder: Path) -> None:
    (folder / "config.json").write_text('{\n  "model_type": "llama",\n  vocab_size: 300\n}\n')


def _truncated_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _corrupt_weights_header(folder: Path) -> None:
    weights = folder / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[:8] + b"#" * 16 + raw[24:])


TOFU_RUN = ["run", "config.yaml", "--data-dir", "tofu"]
EVAL = ["eval", "--config", "config.yaml", "--model"]

# id, setup (run in the test's folder), argv, what the one line must contain
CASES = [
    ("config-not-utf8", _setup_config(b"method:\n  name: npo\n# caf\xe9\n"), ["run", "config.yaml"],
     ["config.yaml: not UTF-8", "byte 0xe9 at offset 25", "save it as UTF-8"]),
    ("config-yaml-flow-syntax", _setup_config("method:\n  name: [npo\ntrain: {}\n"), ["run", "config.yaml"],
     ["config.yaml, line 3, column 6: invalid YAML", "expected ',' or ']'", "line 2, column 9"]),
    ("config-yaml-tab", _setup_config("method:\n\tname: npo\n"), ["run", "config.yaml"],
     ["config.yaml, line 2, column 1: invalid YAML", "'\\t'"]),
    ("config-yaml-bad-indent", _setup_config("method: npo\n  name: x\n"), ["run", "config.yaml"],
     ["config.yaml, line 2, column 7: invalid YAML", "mapping values are not allowed here"]),
    ("attack-missing-run", lambda: None, ["attack", "runs/missing"],
     ["run directory runs/missing does not exist", "unlearnkit run"]),
    ("attack-damaged-run-config", _setup_run_dir_with_config("method:\n  name: [npo\n"), ["attack", "runs/a"],
     ["runs/a/config.yaml, line 3, column 1: invalid YAML"]),
    ("compare-missing-run", _setup_run_dir_with_results("{}"), ["compare", "runs/missing", "runs/b"],
     ["run directory runs/missing does not exist", "unlearnkit run"]),
    ("compare-damaged-results", _setup_run_dir_with_results('{"models": {\n  "x": ,\n}\n'),
     ["compare", "runs/a", "runs/b"], ["runs/a/results.json, line 2, column 8: unreadable JSON"]),
    ("custom-jsonl-null-answer",
     _setup_custom("data/forget.jsonl", json.dumps(GOOD_ROW) + '\n{"question": "Q?", "answer": null}\n'),
     ["run", "config.yaml"], ["data/forget.jsonl, line 2: 'answer' is null", "write the answer as text"]),
    ("custom-jsonl-null-question", _setup_custom("data/forget.jsonl", '{"question": null, "answer": "A."}\n'),
     ["run", "config.yaml"], ["data/forget.jsonl, line 1: 'question' is null"]),
    ("custom-json-array-null-answer",
     _setup_custom("data/forget.json", '[\n  {"question": "Q?", "answer": null}\n]\n'),
     ["run", "config.yaml"], ["data/forget.json, line 1: 'answer' is null"]),
    ("custom-jsonl-syntax",
     _setup_custom("data/forget.jsonl", json.dumps(GOOD_ROW) + '\n{"question": "Q?", "answer": "A.",}\n'),
     ["run", "config.yaml"], ["data/forget.jsonl, line 2, column 35: unreadable JSON"]),
    ("custom-json-array-syntax",
     _setup_custom("data/forget.json", '[\n  {"question": "Q?",\n   "answer": "A." "x"}\n]\n'),
     ["run", "config.yaml"], ["data/forget.json, line 3, column 19: unreadable JSON"]),
    ("tofu-null-answer", _setup_tofu('{"question": "Q?", "answer": null}\n'), TOFU_RUN,
     ["tofu/forget01.json, line 1: 'answer' is null"]),
    ("tofu-json-syntax", _setup_tofu(json.dumps(GOOD_ROW) + '\n{"question": "Q?" "answer": "A."}\n'), TOFU_RUN,
     ["tofu/forget01.json, line 2, column 19: unreadable JSON"]),
    ("model-garbage-config-json", _setup_model(_garbage_config), EVAL + ["models/m"],
     ["models/m/config.json, line 3, column 3: unreadable JSON", "re-save the model with save_pretrained"]),
    ("model-truncated-safetensors", _setup_model(_truncated_weights), EVAL + ["models/m"],
     ["models/m/model.safetensors: damaged safetensors file", "re-save the model with save_pretrained"]),
    ("model-corrupt-safetensors-header", _setup_model(_corrupt_weights_header), EVAL + ["models/m"],
     ["models/m/model.safetensors: damaged safetensors file"]),
    ("model-missing-nested-path", _setup_model(), EVAL + ["models/typo/m"],
     ["model folder models/typo/m does not exist: check the path"]),
    ("model-missing-org-name", _setup_model(), EVAL + ["models/x"],
     ["no folder models/x here, and HF_HUB_OFFLINE=1 so it is not looked up on the hub",
      "check the path, or download the model"]),
]


@pytest.mark.parametrize("setup, argv, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clean_line(tmp_path, monkeypatch, setup, argv, needles):
    monkeypatch.chdir(tmp_path)
    setup()
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    assert "PosixPath" not in message and "'models" not in message, message
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_non_utf8_config_in_a_real_process(tmp_path):
    """The installed entry point, in its own process: exit 2 and one line, no UnicodeDecodeError traceback."""
    (tmp_path / "config.yaml").write_bytes(b"output_dir: run\n# caf\xe9\n")
    proc = subprocess.run([sys.executable, "-m", "unlearnkit", "run", "config.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: config.yaml: not UTF-8 text (byte 0xe9 at offset 21): save it as UTF-8")
    assert not (tmp_path / "run").exists()
