"""Bad input for sharded launches (training/engines.py: check_engine), refused in one line before anything is
written: DeepSpeed without the deepspeed package, methods that take parameter gradients inside their loss,
closure optimizers, LoRA and the training monitor under FSDP or DeepSpeed. A plain launch refuses nothing."""

import importlib.util
import inspect
import sys

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.errors import ConfigError
from unlearnkit.methods import registry
from unlearnkit.training.engines import GRADIENTS_IN_LOSS, check_engine

runner = CliRunner()
NO_DEEPSPEED = importlib.util.find_spec("deepspeed") is None


@pytest.fixture
def fsdp_launch(monkeypatch):
    """What ``accelerate launch --config_file examples/accelerate/fsdp.yaml`` tells each process."""
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")


@pytest.mark.skipif(not NO_DEEPSPEED, reason="deepspeed is installed here")
def test_cli_run_with_a_deepspeed_launch_and_no_deepspeed_exits_2_before_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"method": {"name": "npo"}, "output_dir": "run"}))
    sys.modules.pop("unlearnkit.pipeline", None)
    result = runner.invoke(app, ["run", "run.yaml"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "DeepSpeed" in lines[0] and "pip install deepspeed" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]  # no run folder, no cache


def test_the_refused_methods_are_those_that_take_gradients_inside_their_loss():
    """Read independently from the sources: every registered method whose module calls torch.autograd.grad."""
    calling = {name for name, cls in registry.available().items()
               if "torch.autograd.grad(" in inspect.getsource(sys.modules[cls.__module__])}
    assert calling == set(GRADIENTS_IN_LOSS)


@pytest.mark.parametrize("name", GRADIENTS_IN_LOSS)
def test_fsdp_refuses_methods_that_take_parameter_gradients_in_their_loss(fsdp_launch, name):
    with pytest.raises(ConfigError, match=f"method '{name}' takes parameter gradients inside its loss.*ddp.yaml"):
        check_engine(name)


@pytest.mark.parametrize("settings,needle", [
    ({"closure_optimizer": True}, "closure optimizer"),
    ({"lora": True}, "model.lora with FSDP"),
    ({"monitor": True}, "monitor: evaluates during training"),
])
def test_fsdp_refuses_what_it_cannot_shard(fsdp_launch, settings, needle):
    with pytest.raises(ConfigError, match=needle) as raised:
        check_engine("npo", **settings)
    assert "\n" not in str(raised.value)


def test_fsdp_accepts_npo_and_rmu_and_a_plain_launch_refuses_nothing(fsdp_launch, monkeypatch):
    check_engine("npo")
    check_engine("rmu")
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    check_engine("gru", closure_optimizer=True, lora=True, monitor=True)
