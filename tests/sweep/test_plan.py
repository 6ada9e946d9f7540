"""A sweep's plan: --grid flags, the sweep: block, configurations × seeds, and bad input refused before any run."""

import pytest

from unlearnkit.errors import UnlearnkitError
from unlearnkit.sweep.plan import grid_configurations, make_trials, parse_grid_flag, sweep_settings

BASE = {"method": {"name": "npo"}, "seed": 5}


def test_grid_flags_read_values_as_yaml():
    assert parse_grid_flag("method.params.beta=0.05,0.1") == ("method.params.beta", [0.05, 0.1])
    assert parse_grid_flag("train.learning_rate=1e-5, 3e-5") == ("train.learning_rate", [1e-5, 3e-5])
    assert parse_grid_flag("method.params.retain_loss=[nll, kl]") == ("method.params.retain_loss", ["nll", "kl"])


@pytest.mark.parametrize("flag", ["beta", "=1,2", "method.params.beta=", "x=[1,"])
def test_bad_grid_flags_are_one_line_errors(flag):
    with pytest.raises(UnlearnkitError, match="--grid"):
        parse_grid_flag(flag)


def test_flags_add_to_the_block_and_options_override_it():
    settings = sweep_settings({"grid": {"train.epochs": [1, 2]}, "seeds": 2},
                              ["method.params.beta=0.1,0.2"], seeds=3, workers=None)
    assert settings.grid == {"train.epochs": [1, 2], "method.params.beta": [0.1, 0.2]}
    assert settings.seeds == 3 and settings.workers == 1


def test_configurations_are_the_grid_product_and_trials_add_seeds():
    configurations = grid_configurations({"a.b": [1, 2], "c": ["x", "y", "z"]})
    assert len(configurations) == 6 and configurations[0] == {"a.b": 1, "c": "x"}
    settings = sweep_settings(None, ["method.params.beta=0.1,0.2"], seeds=2)
    trials = make_trials(BASE, grid_configurations(settings.grid), settings)
    assert [(t.overrides["method.params.beta"], t.seed) for t in trials] == [(0.1, 5), (0.1, 6), (0.2, 5), (0.2, 6)]
    assert trials[0].data["method"]["params"]["beta"] == 0.1 and BASE == {"method": {"name": "npo"}, "seed": 5}
    assert trials[0].config_id == trials[1].config_id != trials[2].config_id
    assert len({t.name for t in trials}) == 4


def test_a_bad_value_in_the_grid_is_refused_before_any_run():
    settings = sweep_settings(None, ["method.params.beta=0.1,-1"])
    with pytest.raises(UnlearnkitError, match="beta=-1.*must be > 0"):
        make_trials(BASE, grid_configurations(settings.grid), settings)


@pytest.mark.parametrize("block, flags, message", [
    ({"grid": {"x": []}}, {}, "has no values"),
    ({"search": "optuna"}, {}, "give --trials"),
    ({"space": {"train.learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}}}, {}, "only an optuna search"),
    ({"workers": 0}, {}, "sweep.workers"),
    ({"objectives": ["forget_quality"]}, {}, "sweep.objectives"),
    ({"gird": {}}, {}, "sweep.gird"),
])
def test_bad_sweep_blocks_are_one_line_errors(block, flags, message):
    with pytest.raises(UnlearnkitError, match=message):
        sweep_settings(block, None, **flags)


def test_run_refuses_a_config_with_a_sweep_block(tmp_path):
    from unlearnkit.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("method: {name: npo}\nsweep: {grid: {method.params.beta: [0.1, 0.2]}}\n")
    with pytest.raises(UnlearnkitError, match="unlearnkit sweep"):
        load_config(path)


def test_the_sweep_command_refuses_a_bad_grid_flag_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    path = tmp_path / "c.yaml"
    path.write_text("method: {name: npo}\n")
    result = CliRunner().invoke(app, ["sweep", str(path), "--grid", "method.params.beta", "--output-dir",
                                      str(tmp_path / "sw")])
    assert result.exit_code == 2 and "--grid" in result.output and not (tmp_path / "sw").exists()
