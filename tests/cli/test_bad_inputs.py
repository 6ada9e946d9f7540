"""The corpus of bad inputs at the command line (issue #20), table-driven: config files (encoding, YAML syntax,
unknown keys, wrong types and ranges, method and optimizer parameters), data files (TOFU and custom: missing,
empty, unreadable, null or missing columns), model folders (missing, pickled weights, damaged ``config.json`` or
safetensors, no tokenizer), unlearnkit's own cache (a damaged prepared model: a file that no longer matches its
recorded digest, a missing file or file list; a damaged evaluation-store line) and run directories (to write:
exists or interrupted; to read: missing, incomplete, damaged ``results.json``).

Each is one line on stderr, ``error: <what>: <fix>``, naming the file as typed and the line and column where there
is one; exit status 2; no traceback; nothing written or removed in the test's folder (the cache included). None of
them trains: each fails while the inputs are read (the damaged store's setup evaluates a tiny model once). The paths are typed relative to the test's folder, as a user
would. ``benchmarks/error_latency.py`` runs the same cases as real processes and times them."""

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



def _flip_last_byte(folder: Path) -> None:
    """One bit of the last weight changed: the file keeps its size and its header, only its digest tells."""
    weights = folder / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01
    weights.write_bytes(bytes(raw))


def _run_config(data: dict):
    return lambda: _write("config.yaml", yaml.safe_dump({"output_dir": "run", **data}))


SMALL_TASK = {"source": "synthetic", "options": {"n_people": 4, "forget_people": 1, "holdout_people": 1}}


def _setup_small(extra: dict | None = None):
    """A valid config on a small synthetic task (read in milliseconds), plus ``extra`` top-level keys."""
    return _run_config({"task": SMALL_TASK, **(extra or {})})


def _tiny_model(folder: Path) -> None:
    from unlearnkit.models.load import save_model
    from unlearnkit.models.tiny import build_tiny

    model, tokenizer = build_tiny(["the cat sat on the mat"] * 4, vocab_size=300, hidden_size=32, layers=1, heads=2)
    save_model(model, tokenizer, folder)


def _pickled_only(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not unpickled")


def _no_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "tokenizer.model"):
        (folder / name).unlink(missing_ok=True)


def _no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _setup_damaged_cache(damage):
    """The run config's prepared models in the cache ($UNLEARNKIT_CACHE, the test's cache/ folder), the target one
    broken by ``damage``: found when the run loads it, before anything is written."""
    def setup():
        _setup_small()()
        from unlearnkit.config import load_config
        from unlearnkit.data.sources import load_task
        from unlearnkit.models.prepared import default_recipe, prepare_key, write_manifest
        from unlearnkit.runio import default_cache_dir

        cfg = load_config("config.yaml")
        task = load_task(cfg.task.source, **cfg.task.options)
        recipe = default_recipe(cfg.model.base).model_copy(update={"seed": cfg.seed})
        key = prepare_key(task, cfg.model.base, recipe, cfg.model.max_length, cfg.model.template, cfg.seed)
        root = default_cache_dir() / "prepared" / key
        for role in ("target", "retain"):
            _tiny_model(root / role)
            write_manifest(root / role)  # as prepare writes it
        damage(root / "target")
    return setup


def _setup_damaged_store():
    """A tiny model evaluated once on a one-question task (its results in the cache's evaluation store), then one
    bit flipped inside the first stored value of each store file: found when the next evaluation reads it."""
    _setup_custom_files(json.dumps({"question": "Who sang it?", "answer": "Bo Ray."}) + "\n")()
    _tiny_model(Path("models/m"))
    first = runner.invoke(app, EVAL + ["models/m", "--quiet", "--set", "eval.max_new_tokens=4"])
    assert first.exit_code == 0, first.output
    parts = sorted(Path("cache/scores").glob("*/*/part-0.jsonl"))
    assert parts
    for part in parts:
        raw = bytearray(part.read_bytes())
        raw[raw.index(b'"value": ') + 12] ^= 0x01
        part.write_bytes(bytes(raw))


def _setup_given_models(target: str, retain: str):
    return _run_config({"task": SMALL_TASK, "model": {"target": target, "retain": retain}})


def _setup_finished_run(*missing: str):
    """runs/a as a finished run leaves it (config.yaml, results.json, model/), less ``missing``."""
    def setup():
        _write("runs/a/config.yaml", yaml.safe_dump({"task": SMALL_TASK}))
        _write("runs/a/results.json", "{}")
        Path("runs/a/model").mkdir()
        for name in missing:
            target = Path("runs/a") / name
            target.rmdir() if target.is_dir() else target.unlink()
    return setup


def _setup_custom_files(forget: str | bytes):
    return _setup_custom("data/forget.jsonl", forget) if isinstance(forget, str) else _setup_custom_bytes(forget)


def _setup_custom_bytes(forget: bytes):
    def setup():
        _write("data/retain.jsonl", json.dumps(GOOD_ROW) + "\n")
        _write("data/forget.jsonl", forget)
        _write("config.yaml", _custom("data/forget.jsonl"))
    return setup


def _setup_tofu_split(split: str):
    def setup():
        _tofu_folder(json.dumps(GOOD_ROW) + "\n")
        _write("config.yaml", _config({"source": "tofu", "options": {"split": split}}))
    return setup


def _setup_model_folder(damage):
    def setup():
        _setup_model()()
        _tiny_model(Path("models/m"))
        damage(Path("models/m"))
    return setup


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
    ("rundir-attack-missing-run", lambda: None, ["attack", "runs/missing"],
     ["run directory runs/missing does not exist", "unlearnkit run"]),
    ("rundir-attack-damaged-run-config", _setup_run_dir_with_config("method:\n  name: [npo\n"), ["attack", "runs/a"],
     ["runs/a/config.yaml, line 3, column 1: invalid YAML"]),
    ("rundir-compare-missing-run", _setup_run_dir_with_results("{}"), ["compare", "runs/missing", "runs/b"],
     ["run directory runs/missing does not exist", "unlearnkit run"]),
    ("rundir-compare-damaged-results", _setup_run_dir_with_results('{"models": {\n  "x": ,\n}\n'),
     ["compare", "runs/a", "runs/b"], ["runs/a/results.json, line 2, column 8: unreadable JSON"]),
    ("data-custom-jsonl-null-answer",
     _setup_custom("data/forget.jsonl", json.dumps(GOOD_ROW) + '\n{"question": "Q?", "answer": null}\n'),
     ["run", "config.yaml"], ["data/forget.jsonl, line 2: 'answer' is null", "write the answer as text"]),
    ("data-custom-jsonl-null-question", _setup_custom("data/forget.jsonl", '{"question": null, "answer": "A."}\n'),
     ["run", "config.yaml"], ["data/forget.jsonl, line 1: 'question' is null"]),
    ("data-custom-json-array-null-answer",
     _setup_custom("data/forget.json", '[\n  {"question": "Q?", "answer": null}\n]\n'),
     ["run", "config.yaml"], ["data/forget.json, line 1: 'answer' is null"]),
    ("data-custom-jsonl-syntax",
     _setup_custom("data/forget.jsonl", json.dumps(GOOD_ROW) + '\n{"question": "Q?", "answer": "A.",}\n'),
     ["run", "config.yaml"], ["data/forget.jsonl, line 2, column 35: unreadable JSON"]),
    ("data-custom-json-array-syntax",
     _setup_custom("data/forget.json", '[\n  {"question": "Q?",\n   "answer": "A." "x"}\n]\n'),
     ["run", "config.yaml"], ["data/forget.json, line 3, column 19: unreadable JSON"]),
    ("data-tofu-null-answer", _setup_tofu('{"question": "Q?", "answer": null}\n'), TOFU_RUN,
     ["tofu/forget01.json, line 1: 'answer' is null"]),
    ("data-tofu-json-syntax", _setup_tofu(json.dumps(GOOD_ROW) + '\n{"question": "Q?" "answer": "A."}\n'), TOFU_RUN,
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

    # config: structure (found before torch is imported), then the method and optimizer parameters
    ("config-missing-file", lambda: None, ["run", "nope.yaml"],
     ["config file nope.yaml does not exist", "pass the path of a YAML file"]),
    ("config-not-a-mapping", _setup_config("- npo\n- rmu\n"), ["run", "config.yaml"],
     ["config.yaml must hold a YAML mapping", "not a list"]),
    ("config-unknown-key", _setup_config("trian:\n  epochs: 1\n"), ["run", "config.yaml"],
     ["config.yaml: unknown config key 'trian'", "valid keys here are task, model"]),
    ("config-unknown-nested-key", _setup_small({"train": {"epoch": 1}}), ["run", "config.yaml"],
     ["config.yaml: unknown config key 'train.epoch'", "epochs"]),
    ("config-wrong-type", _setup_small(), ["run", "config.yaml", "--set", "train.learning_rate=abc"],
     ["config.yaml: train.learning_rate:", "valid number", "'abc'"]),
    ("config-out-of-range", _setup_small(), ["run", "config.yaml", "--set", "train.epochs=0"],
     ["config.yaml: train.epochs:", "greater than or equal to 1"]),
    ("config-set-not-key-value", _setup_small(), ["run", "config.yaml", "--set", "train.epochs"],
     ["--set 'train.epochs' is not KEY=VALUE"]),
    ("config-set-into-a-value", _setup_small(), ["run", "config.yaml", "--set", "output_dir.x=1"],
     ["override 'output_dir.x': 'output_dir' is not a section"]),
    ("config-sweep-block", _setup_small({"sweep": {"grid": {}}}), ["run", "config.yaml"],
     ["config.yaml has a sweep: block", "unlearnkit sweep config.yaml"]),
    ("config-jailbreak-on-raw-text", _run_config({"task": {"source": "synthetic_corpus"}, "eval": {"jailbreak": True}}),
     ["run", "config.yaml"], ["config.yaml: eval.jailbreak", "remove eval.jailbreak"]),
    ("config-unknown-method", _setup_small({"method": {"name": "npoo"}}), ["run", "config.yaml"],
     ["config.yaml: method.name:", "'npoo'"]),
    ("config-method-param-not-a-number", _setup_small(), ["run", "config.yaml", "--set", "method.params.beta=x"],
     ["config.yaml: method.params.beta: must be a number, got 'x'", "beta: float, > 0"]),
    ("config-method-param-out-of-range", _setup_small(), ["run", "config.yaml", "--set", "method.params.beta=-1"],
     ["config.yaml: method.params.beta:", "beta: float, > 0"]),
    ("config-method-param-unknown", _setup_small(), ["run", "config.yaml", "--set", "method.params.bta=1"],
     ["config.yaml: method 'npo' has no parameter 'bta'", "its parameters are beta"]),
    ("config-unknown-optimizer", _setup_small(), ["run", "config.yaml", "--set", "train.optimizer=adamm"],
     ["config.yaml: train.optimizer: unknown optimizer 'adamm'", "unlearnkit optimizers"]),
    ("config-optimizer-param-out-of-range", _setup_small({"train": {"optimizer": {"name": "lion", "beta1": 5}}}),
     ["run", "config.yaml"], ["config.yaml: train.optimizer: optimizer 'lion' parameter beta1: must be <= 1"]),
    ("config-clipping-with-closure-optimizer",
     _setup_small({"train": {"optimizer": "zo", "max_grad_norm": 1.0}}), ["run", "config.yaml"],
     ["config.yaml: train: max_grad_norm clips the one gradient", "set max_grad_norm: null"]),
    ("config-unknown-extra-metric", _setup_small({"eval": {"extra_metrics": ["forget_Q_A_PARA_ROUG"]}}),
     ["run", "config.yaml"], ["config.yaml: eval.extra_metrics:", "forget_Q_A_PARA_ROUG"]),
    # data
    ("config-unknown-data-source", _run_config({"task": {"source": "tofuu"}}), ["run", "config.yaml"],
     ["config.yaml: task.source: Input should be 'synthetic', 'tofu'", "(got 'tofuu')"]),
    ("data-unknown-option", _run_config({"task": {"source": "synthetic", "options": {"n_peple": 4}}}),
     ["run", "config.yaml"], ["unknown option(s) n_peple for data source 'synthetic'"]),
    ("data-tofu-missing-folder", _setup_config(_config({"source": "tofu", "options": {"split": "forget01"}})),
     ["run", "config.yaml", "--data-dir", "no-such-tofu"], ["no-such-tofu"]),
    ("data-tofu-unknown-split", _setup_tofu_split("forget07"), TOFU_RUN,
     ["unknown TOFU split 'forget07'", "forget01"]),
    ("data-custom-missing-file", _setup_custom_files(json.dumps(GOOD_ROW) + "\n"),
     ["run", "config.yaml", "--set", "task.options.forget=data/nope.jsonl"], ["data/nope.jsonl"]),
    ("data-custom-empty-file", _setup_custom_files(""), ["run", "config.yaml"], ["data/forget.jsonl"]),
    ("data-custom-missing-column", _setup_custom_files('{"question": "Q?"}\n'), ["run", "config.yaml"],
     ["data/forget.jsonl, line 1", "'answer'"]),
    ("data-custom-not-utf8", _setup_custom_files(b'{"question": "Q?", "answer": "caf\xe9"}\n'),
     ["run", "config.yaml"], ["data/forget.jsonl", "UTF-8"]),
    # model folders
    ("model-pickled-weights-only", _setup_model_folder(_pickled_only), EVAL + ["models/m"],
     ["model folder models/m holds only pickled weights (pytorch_model.bin)", "safe_serialization=True"]),
    ("model-no-weights", _setup_model_folder(_no_weights), EVAL + ["models/m"],
     ["model folder models/m has no weights"]),
    ("model-no-tokenizer", _setup_model_folder(_no_tokenizer), EVAL + ["models/m"],
     ["model folder models/m has no tokenizer"]),
    ("model-path-is-a-file", lambda: (_setup_model()(), _write("models/m", "x")), EVAL + ["models/m"],
     ["model path models/m is a file, not a folder"]),
    ("model-missing-retain-for-eval", _setup_model_folder(lambda folder: None),
     EVAL + ["models/m", "--retain", "models/r/x"], ["model folder models/r/x does not exist"]),
    ("model-run-target-missing", _setup_given_models("models/typo/target", "models/typo/retain"),
     ["run", "config.yaml"], ["model folder models/typo/target does not exist"]),
    ("model-run-base-missing", _setup_small({"model": {"base": "./models/base"}}), ["run", "config.yaml"],
     ["model folder ./models/base does not exist"]),
    # cache: unlearnkit's own prepared models, damaged; the message names the folder to delete
    ("cache-prepared-config-json", _setup_damaged_cache(_garbage_config), ["run", "config.yaml"],
     ["target/config.json, line 3, column 3: unreadable JSON", "and run `unlearnkit prepare` again"]),
    ("cache-prepared-truncated-weights", _setup_damaged_cache(_truncated_weights), ["run", "config.yaml"],
     ["target/model.safetensors: damaged safetensors file", "and run `unlearnkit prepare` again"]),
    ("cache-prepared-flipped-byte", _setup_damaged_cache(_flip_last_byte), ["run", "config.yaml"],
     ["cached prepared model /", "/cache/prepared/", "/target is damaged (model.safetensors differs from what was written)",
      "rebuild it with `unlearnkit prepare CONFIG --force`"]),
    ("cache-prepared-without-file-list", _setup_damaged_cache(lambda folder: (folder / "unlearnkit_files.json").unlink()),
     ["run", "config.yaml"], ["/target is damaged (unlearnkit_files.json is missing)", "or delete /"]),
    ("cache-prepared-file-missing", _setup_damaged_cache(lambda folder: (folder / "tokenizer.json").unlink()),
     ["prepare", "config.yaml"], ["/target is damaged (tokenizer.json is missing)"]),
    ("cache-store-flipped-byte", _setup_damaged_store, EVAL + ["models/m", "--set", "eval.max_new_tokens=4"],
     ["evaluation store /", "/cache/scores/", "/part-0.jsonl is damaged (line 1 does not match its digest): delete /",
      "(its results are computed again by the next evaluation)"]),
    # run directories
    ("rundir-output-exists", lambda: (_setup_small()(), Path("run").mkdir()), ["run", "config.yaml"],
     ["output directory run already exists", "--output-dir"]),
    ("rundir-partial-without-resume", lambda: (_setup_small()(), Path("run.partial").mkdir()), ["run", "config.yaml"],
     ["run.partial holds an interrupted run: pass --resume"]),
    ("rundir-attack-not-a-directory", lambda: _write("runs/a", "x"), ["attack", "runs/a"],
     ["runs/a is not a directory"]),
    ("rundir-attack-without-model", _setup_finished_run("model"), ["attack", "runs/a"],
     ["runs/a has no model: pass a finished run directory"]),
    ("rundir-attack-without-results", _setup_finished_run("results.json"), ["attack", "runs/a"],
     ["runs/a has no results.json"]),
    ("rundir-compare-results-a-list", _setup_run_dir_with_results("[]"), ["compare", "runs/a", "runs/b"],
     ["runs/a/results.json holds a JSON list, not the results object"]),
    ("rundir-compare-results-not-utf8", lambda: (_setup_run_dir_with_results("{}")(),
                                                 _write("runs/a/results.json", b'{"x": "\xff"}')),
     ["compare", "runs/a", "runs/b"], ["runs/a/results.json: not UTF-8 text"]),
    ("rundir-compare-second-missing", _setup_run_dir_with_results("{}"), ["compare", "runs/a", "runs/c"],
     ["run directory runs/c does not exist"]),
]


@pytest.mark.parametrize("setup, argv, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clean_line(tmp_path, monkeypatch, setup, argv, needles):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    setup()
    before = _tree(tmp_path)
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    assert "PosixPath" not in message, message  # paths as typed, never a Python repr
    assert _tree(tmp_path) == before  # nothing written, nothing removed (a run folder that existed is kept)


def _tree(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` with its size (folders: -1); lock files of the model cache aside."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in sorted(root.rglob("*"))
            if not p.name.endswith(".lock")}


def test_the_corpus_covers_every_kind_of_input():
    """Issue #20: at least 40 cases across config, data, model, cache and run-directory errors."""
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    for kind in ("config", "data", "model", "cache", "rundir"):
        assert any(c[0].startswith(kind) for c in CASES), kind


def test_non_utf8_config_in_a_real_process(tmp_path):
    """The installed entry point, in its own process: exit 2 and one line, no UnicodeDecodeError traceback."""
    (tmp_path / "config.yaml").write_bytes(b"output_dir: run\n# caf\xe9\n")
    proc = subprocess.run([sys.executable, "-m", "unlearnkit", "run", "config.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: config.yaml: not UTF-8 text (byte 0xe9 at offset 21): save it as UTF-8")
    assert not (tmp_path / "run").exists()
