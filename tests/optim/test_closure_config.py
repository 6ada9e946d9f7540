"""Bad input for the closure optimizers, refused at config load in one line with the reason (exit 2 via the CLI,
before anything runs): an optimizer that cannot serve the method, a setting it would ignore, a bad parameter."""

import sys

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.config import parse_config
from unlearnkit.errors import UnlearnkitError

runner = CliRunner()


@pytest.mark.parametrize("config,needles", [
    ({"method": {"name": "rmu"}, "train": {"optimizer": {"name": "sam"}}},
     ["train.optimizer: optimizer 'sam' cannot train method 'rmu'", "perturb: forget", "set perturb: all"]),
    ({"method": {"name": "rmu"}, "train": {"optimizer": {"name": "smoothing"}}},
     ["optimizer 'smoothing' cannot train method 'rmu'"]),
    ({"train": {"optimizer": "zo", "max_grad_norm": 1.0}},
     ["train: max_grad_norm clips the one gradient", "optimizer 'zo'", "set max_grad_norm: null"]),
    ({"train": {"optimizer": {"name": "es", "population": 5}}}, ["population must be even"]),
    ({"train": {"optimizer": {"name": "sam", "base": "zo"}}},
     ["base must be a first-order optimizer: one of adamw, lion, sgd, sign_adam, signsgd, got 'zo'"]),
    ({"train": {"optimizer": {"name": "zo", "distribution": "uniform"}}},
     ["parameter distribution: must be 'sphere' or 'gaussian'"]),
    ({"train": {"optimizer": {"name": "rolling_ball", "steps": 3}}},
     ["optimizer 'rolling_ball' has no parameter 'steps'", "its parameters are rho, projection_steps, gamma"]),
])
def test_refused_at_load_in_one_line(config, needles):
    with pytest.raises(UnlearnkitError) as caught:
        parse_config(config, "run.yaml")
    message = str(caught.value)
    assert message.startswith("run.yaml: train") and "\n" not in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("config", [
    {"method": {"name": "npo"}, "train": {"optimizer": "sam"}},  # NPO gives its forget and retain terms apart
    {"method": {"name": "ga"}, "train": {"optimizer": "smoothing"}},  # no retain term: the loss is the forget term
    {"method": {"name": "rmu"}, "train": {"optimizer": {"name": "sam", "perturb": "all"}}},
    {"method": {"name": "rmu"}, "train": {"optimizer": "zo"}},
    {"method": {"name": "graddiff"}, "train": {"optimizer": {"name": "es", "population": 4}, "max_grad_norm": None}},
])
def test_what_fits_is_accepted(config):
    parse_config(config, "run.yaml")


def test_cli_run_refuses_an_optimizer_that_cannot_serve_the_method_with_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"method": {"name": "rmu"}, "train": {"optimizer": {"name": "sam"}}, "output_dir": "run"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    sys.modules.pop("unlearnkit.pipeline", None)
    result = runner.invoke(app, ["run", "run.yaml"])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: run.yaml: train.optimizer: optimizer 'sam' cannot train method 'rmu'")
    assert "\n" not in message and not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_optimizers_lists_the_closure_optimizers_with_rule_and_citation():
    result = runner.invoke(app, ["optimizers"])
    assert result.exit_code == 0, result.output
    for name, cite in (("zo", "arXiv:2510.00761"), ("adazo", "arXiv:2502.01014"), ("zo_hybrid", "arXiv:2510.00761"),
                       ("es", "arXiv:2511.16652"), ("sam", "arXiv:2502.05374"), ("smoothing", "arXiv:2502.05374"),
                       ("rolling_ball", "Rolling Ball")):
        assert any(line.startswith(name + " ") for line in result.stdout.splitlines()) and cite in result.stdout
