"""`unlearnkit eval --model DIR`: the TOFU suite on QA tasks, the MUSE suite on raw-text corpus tasks."""

import json

from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.data.synthetic_corpus import synthetic_corpus_task
from unlearnkit.models.load import save_model
from unlearnkit.models.tiny import build_tiny

CORPUS = ["--set", "task.source=synthetic_corpus", "--set", "task.options.n_people=8",
          "--set", "task.options.forget_people=2", "--set", "task.options.holdout_people=2",
          "--set", "eval.batch_size=8", "--set", "model.max_length=64"]


def test_eval_on_a_corpus_task_runs_the_muse_suite_with_privleak(tmp_path):
    task = synthetic_corpus_task(n_people=8, forget_people=2, holdout_people=2)
    model, tokenizer = build_tiny(task.texts(), seed=0, vocab_size=400, hidden_size=32, layers=2, heads=2)
    save_model(model, tokenizer, tmp_path / "model")
    out = tmp_path / "muse.json"
    result = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "model"), "--retain", str(tmp_path / "model"),
                                      "--output", str(out), "--quiet", *CORPUS])
    assert result.exit_code == 0, result.output
    aggregates = json.loads(out.read_text())["aggregates"]
    assert {"verbmem_f", "knowmem_f", "knowmem_r", "mia_min_k", "privleak"} <= set(aggregates)
    assert aggregates["privleak"] == 0.0  # the model against itself as the retain model


def test_a_corpus_run_with_a_method_that_needs_questions_is_refused(tmp_path):
    """Raw-text runs work (tests/pipeline/test_corpus_run.py); a method that trains on refusals to questions does not."""
    config = tmp_path / "c.yaml"
    config.write_text("task: {source: synthetic_corpus}\noutput_dir: " + str(tmp_path / "run") + "\n")
    result = CliRunner().invoke(app, ["run", str(config), "--method", "idknll"])
    assert result.exit_code == 2 and "raw-text task has no questions" in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()
