"""The run config: unknown keys and bad values are one-line errors; overrides reach nested keys."""

from pathlib import Path

import pytest

from unlearnkit.config import dump_config, load_config, parse_config
from unlearnkit.errors import UnlearnkitError


def test_defaults_are_the_offline_demo_shape():
    cfg = parse_config({})
    assert (cfg.task.source, cfg.model.base, cfg.method.name) == ("synthetic", "tiny", "npo")


@pytest.mark.parametrize("data, needle", [
    ({"trian": {}}, "'trian'"),
    ({"train": {"epoch": 3}}, "'train.epoch'"),
    ({"model": {"bsae": "tiny"}}, "'model.bsae'"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"task": {"source": "wikipedia"}}, "task.source"),
])
def test_bad_config_is_a_clear_error(data, needle):
    with pytest.raises(UnlearnkitError, match=needle.replace(".", r"\.")):
        parse_config(data)


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(UnlearnkitError) as err:
        parse_config({"eval": {"batchsize": 3}})
    assert "batch_size" in str(err.value) and "max_new_tokens" in str(err.value)


def test_yaml_round_trip_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(parse_config({"method": {"name": "simnpo"}})))
    cfg = load_config(path, {"train.learning_rate": 3e-4, "method.params.beta": 2.0})
    assert cfg.method.name == "simnpo" and cfg.train.learning_rate == 3e-4 and cfg.method.params == {"beta": 2.0}


def test_non_mapping_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(UnlearnkitError, match="mapping"):
        load_config(path)


@pytest.mark.parametrize("example", sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")),
                         ids=lambda path: path.name)
def test_every_example_config_is_valid(example):
    """The configs users copy from examples/ pass validation (unknown keys, bad values) as they are."""
    from unlearnkit.methods.registry import get_method

    cfg = load_config(example)
    assert cfg.output_dir and get_method(cfg.method.name, **cfg.method.params).name == cfg.method.name


@pytest.mark.parametrize("method", ["npo", "simnpo", "idkdpo"])
@pytest.mark.parametrize("value, problem", [(0, "must be > 0, got 0"), ("x", "must be a number, got 'x'")])
def test_bad_method_parameter_stops_at_load(tmp_path, method, value, problem):
    """Checked against the method's typed Params when the file is read: one line naming the parameter, its type
    and range, not a failure at the first training step."""
    path = tmp_path / "c.yaml"
    path.write_text(f"method:\n  name: {method}\n  params: {{beta: {value!r}}}\n")
    with pytest.raises(UnlearnkitError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: method.params.beta: {problem} (beta: float, > 0, default ")


@pytest.mark.parametrize("method, needles", [
    ({"name": "forgetall"}, ["method.name", "unknown method 'forgetall'", "choose one of", ", ga, graddiff, ", "npo"]),
    ({"name": "npo", "params": {"gamma": 1.0}}, ["no parameter 'gamma'", "beta, forget_weight, retain_weight"]),
    ({"name": "rmu", "params": {"positions": "tokens"}}, ["method.params.positions", "'answer' or 'all'"]),
])
def test_unknown_method_or_parameter_stops_at_load(method, needles):
    with pytest.raises(UnlearnkitError) as err:
        parse_config({"method": method})
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize("section", ["train", "prepare"])
@pytest.mark.parametrize("key", ["seed", "save_every_epoch"])
def test_train_sections_keep_their_schema(section, key):
    """The run's seed is the top-level seed: and a run checkpoints every epoch; the sections do not take either."""
    with pytest.raises(UnlearnkitError, match=f"unknown config key '{section}.{key}'"):
        parse_config({section: {key: 1}})
