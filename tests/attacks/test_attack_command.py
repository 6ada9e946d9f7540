"""`unlearnkit attack RUN_DIR`: the attacks run on a finished run and land in its results.json and report.html."""

import json

import pytest

from typer.testing import CliRunner

import unlearnkit
from unlearnkit.cli import app

SMALL_RUN = {
    "task": {"source": "synthetic", "options": {"n_people": 8, "forget_people": 2, "holdout_people": 2}},
    "model": {"base": "tiny", "max_length": 96},
    "prepare": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5},
    "method": {"name": "ga"},
    "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 0, "schedule": "constant"},
    "eval": {"batch_size": 32, "max_new_tokens": 8},
}


def test_attack_command_updates_results_and_report(tmp_path):
    run_dir = unlearnkit.unlearn({**SMALL_RUN, "output_dir": str(tmp_path / "run")}, progress=False).run_dir
    result = CliRunner().invoke(app, ["attack", str(run_dir), "--quiet", "--set", "relearn.examples=4",
                                      "--set", "relearn.steps=4", "--set", "relearn.eval_every=2",
                                      "--set", "relearn.learning_rate=1e-3", "--set", "quantize.schemes=[int8]",
                                      "--set", "latent.epsilons=[0,1]", "--set", "latent.steps=3",
                                      "--attack", "relearn,quantize,suffix,latent", "--set", "suffix.examples=2",
                                      "--set", "suffix.steps=2", "--set", "suffix.candidates=4",
                                      "--set", "suffix.suffix_length=3",
                                      "--set", "metrics=[forget_Q_A_Prob,forget_Q_A_ROUGE]"])
    assert result.exit_code == 0, result.output
    robustness = json.loads((run_dir / "results.json").read_text())["robustness"]
    fractions = robustness["relearn"]["recovered_fraction"]
    assert set(fractions) == {"unlearned", "retain"}
    curve = robustness["relearn"]["curves"]["unlearned"]
    assert curve["steps"] == [0, 2, 4]
    # the relearning curve starts at the run's own evaluation of the unlearned model (the same pairs batched
    # with other pairs, hence float32 rounding only)
    ran = json.loads((run_dir / "results.json").read_text())["models"]["unlearned"]["aggregates"]
    assert curve["curve"]["forget_Q_A_Prob"][0] == pytest.approx(ran["forget_Q_A_Prob"], rel=1e-5)
    assert set(robustness["quantize"]["unlearned"]) == {"full", "int8"}
    full = robustness["quantize"]["unlearned"]["full"]["aggregates"]["forget_Q_A_Prob"]
    assert full == pytest.approx(ran["forget_Q_A_Prob"], rel=1e-5)
    suffix = robustness["suffix"]
    assert suffix["search"]["nll_after"] <= suffix["search"]["losses"][0]
    assert set(suffix["models"]) == {"unlearned", "target", "retain"}
    assert "forget_Q_A_Prob" in suffix["models"]["unlearned"]["paraphrased"]
    latent = robustness["latent"]["unlearned"]
    assert latent["nll"][1] <= latent["nll"][0] and len(latent["recovered_fraction"]) == 2
    assert "Robustness" in (run_dir / "report.html").read_text()


def test_attack_on_a_folder_that_is_not_a_run(tmp_path):
    result = CliRunner().invoke(app, ["attack", str(tmp_path)])
    assert result.exit_code == 2 and "finished run directory" in result.stderr
