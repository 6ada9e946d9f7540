"""``train.optimizer`` in the run config: checked at load in one line (exit 2 via the CLI, before anything runs),
and ``unlearnkit optimizers [NAME]``."""

import re
import sys

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.config import parse_config
from unlearnkit.errors import UnlearnkitError
from unlearnkit.training.config import TrainConfig, TrainSettings

runner = CliRunner()


def test_default_is_adamw_and_params_sit_beside_the_name():
    assert TrainSettings().optimizer.name == "adamw" and TrainSettings().optimizer.params() == {}
    cfg = parse_config({"train": {"optimizer": {"name": "lion", "beta1": 0.95}}, "prepare": {"optimizer": "sgd"}})
    assert cfg.train.optimizer.name == "lion" and cfg.train.optimizer.params() == {"beta1": 0.95}
    assert cfg.prepare.optimizer.name == "sgd"  # a bare name means {name: sgd}


def test_to_dict_leaves_out_only_the_default_optimizer():
    assert "optimizer" not in TrainConfig().to_dict()  # checkpoints and prepare keys as before
    assert "optimizer" not in TrainConfig(optimizer={"name": "adamw"}).to_dict()
    assert TrainConfig(optimizer={"name": "lion", "beta2": 0.98}).to_dict()["optimizer"] == {"name": "lion",
                                                                                           "beta2": 0.98}


@pytest.mark.parametrize("optimizer,needles", [
    ({"name": "adam"}, ["train.optimizer", "unknown optimizer 'adam'", "adamw, adazo, es, lion, rolling_ball, sam, sgd, "
                                                                "sign_adam, signsgd, smoothing, zo, zo_hybrid"]),
    ({"name": "lion", "beta3": 0.5}, ["optimizer 'lion' has no parameter 'beta3'", "beta1, beta2"]),
    ({"name": "lion", "beta1": 1.5}, ["parameter beta1: must be <= 1, got 1.5", "float, >= 0, <= 1, default 0.9"]),
    ({"name": "sgd", "momentum": "lots"}, ["parameter momentum: must be a number", "float, >= 0, < 1"]),
    ({"name": "sign_adam", "scale": "max"}, ["parameter scale: must be 'none' or 'mean', got 'max'"]),
    ({"name": "sgd", "nesterov": True}, ["nesterov: true needs momentum > 0"]),
    ({"name": "adamw", "lr": 1e-3}, ["has no parameter 'lr'", "learning_rate and weight_decay are set in train:"]),
])
def test_bad_optimizers_are_one_line_at_load(optimizer, needles):
    with pytest.raises(UnlearnkitError) as caught:
        parse_config({"train": {"optimizer": optimizer}}, "run.yaml")
    message = str(caught.value)
    assert message.startswith("run.yaml: train.optimizer: ") and "\n" not in message
    for needle in needles:
        assert needle in message


def test_api_settings_error_is_one_line():
    with pytest.raises(UnlearnkitError, match=r"^training setting optimizer: unknown optimizer 'x'"):
        TrainConfig.checked(optimizer={"name": "x"})


@pytest.mark.parametrize("optimizer,needle", [({"name": "adam"}, "unknown optimizer 'adam'"),
                                              ({"name": "lion", "beta2": -1}, "parameter beta2: must be >= 0")])
def test_cli_run_refuses_a_bad_optimizer_with_exit_2_before_anything_runs(tmp_path, monkeypatch, optimizer, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"train": {"optimizer": optimizer}, "output_dir": "run"}))
    sys.modules.pop("unlearnkit.pipeline", None)
    result = runner.invoke(app, ["run", "run.yaml"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: run.yaml: train.optimizer:") and needle in message and "\n" not in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_cli_set_picks_an_optimizer_and_checks_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "missing.yaml"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["prepare", "--set", "prepare.optimizer=nope"])
    assert result.exit_code == 2 and "flags: prepare.optimizer: unknown optimizer 'nope'" in result.stderr


def test_optimizers_lists_each_with_rule_and_citation():
    result = runner.invoke(app, ["optimizers"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name, cite in (("adamw", "arXiv:1711.05101"), ("lion", "arXiv:2302.06675"), ("signsgd", "arXiv:1802.04434"),
                       ("sign_adam", "arXiv:2510.00761"), ("sgd", "Sutskever")):
        assert re.search(rf"^{name}\s+\S", out, re.M) and cite in out
    assert "sign(c) + wd·θ" in out


def test_optimizers_lion_prints_its_parameters():
    result = runner.invoke(app, ["optimizers", "lion"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert re.match(r"beta1\s+float\s+0\.9\s+>= 0, <= 1\s+weight of the momentum", rows["beta1"])
    assert re.match(r"beta2\s+float\s+0\.99\s+>= 0, <= 1\s+decay of the momentum", rows["beta2"])
    assert "arXiv:2302.06675" in result.stdout


def test_unknown_optimizer_name_is_one_line_and_exit_2():
    result = runner.invoke(app, ["optimizers", "adam"])
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith("error: unknown optimizer 'adam'") and "\n" not in message and "lion" in message
