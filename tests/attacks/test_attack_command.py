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


def test_runs_sharing_target_and_retain_attack_them_once(tmp_path, monkeypatch):
    """The second run's attack recomputes only what is its own (the unlearned model, and the control relearning of
    it); the target's and retain model's outcomes come from the store, equal to the first run's."""
    import unlearnkit.attacks.suite as suite
    from unlearnkit.attacks.suite import run_attacks
    from unlearnkit.config import AttacksConfig

    settings = AttacksConfig.model_validate({
        "run": ["relearn", "quantize"], "relearn": {"examples": 2, "steps": 2, "eval_every": 1},
        "quantize": {"schemes": ["int8"]}, "metrics": ["forget_Q_A_Prob", "forget_Q_A_ROUGE"]})
    runs = [unlearnkit.unlearn({**SMALL_RUN, "output_dir": str(tmp_path / name)}, progress=False,
                               train__learning_rate=lr).run_dir for name, lr in (("a", 1e-3), ("b", 3e-4))]
    first = run_attacks(runs[0], settings, progress=False)
    calls = {"relearn": 0, "quantize": 0}
    real_relearn, real_quantize = suite.relearn, suite.quantize_attack

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(suite, "relearn", counted("relearn", real_relearn))
    monkeypatch.setattr(suite, "quantize_attack", counted("quantize", real_quantize))
    second = run_attacks(runs[1], settings, progress=False)
    assert calls == {"relearn": 2, "quantize": 1}  # unlearned + control; unlearned
    for who in ("target", "retain"):
        assert second["quantize"][who] == first["quantize"][who]
    assert second["relearn"]["curves"]["target"] == first["relearn"]["curves"]["target"]
    assert second["relearn"]["curves"]["retain"] == first["relearn"]["curves"]["retain"]
