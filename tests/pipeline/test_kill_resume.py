"""Resume to the last byte (issue #20, point 6): ``unlearnkit prepare`` and ``unlearnkit run`` killed with SIGKILL
in the middle of training (real processes, no clean-up of any kind runs), then run again (``run --resume``), end
with the same bytes as uninterrupted ones: the prepared models' and the unlearned model's ``model.safetensors``, and
every aggregate of every model in ``results.json``. Each side has its own unlearnkit cache, so no evaluation of one
is read by the other: the equal numbers are computed twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

CONFIG = {
    "task": {"source": "synthetic", "options": {"n_people": 4, "forget_people": 1, "holdout_people": 1}},
    "model": {"base": "tiny", "max_length": 64},
    "prepare": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 2},
    "method": {"name": "npo"},
    "train": {"epochs": 3, "batch_size": 2, "learning_rate": 5e-4, "warmup_steps": 0},
    "eval": {"batch_size": 32, "max_new_tokens": 4, "intervals": False},
}


def _env(cache: Path) -> dict:
    return {**os.environ, "UNLEARNKIT_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "unlearnkit", *args, "--quiet"]


def _finish(folder: Path, cache: Path, *args: str) -> None:
    proc = subprocess.run(_command(*args), cwd=folder, env=_env(cache), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


def _kill_once(folder: Path, cache: Path, pattern: str, *args: str) -> None:
    """Start the command and SIGKILL it as soon as a path matching ``pattern`` (a checkpoint) exists."""
    proc = subprocess.Popen(_command(*args), cwd=folder, env=_env(cache), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not any(folder.glob(pattern)) and not any(cache.glob(pattern)):
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


@pytest.fixture(scope="module")
def two_sides(tmp_path_factory):
    """``a``: run without interruption (preparing its models on the way); ``b``: ``prepare`` killed in the target
    model's second epoch, then ``run`` (which finishes preparing) killed in its second unlearning epoch, then
    ``run --resume``."""
    root = tmp_path_factory.mktemp("kill")
    sides = {}
    for side in ("a", "b"):
        folder, cache = root / side, root / side / "cache"
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({**CONFIG, "output_dir": "run"}))
        if side == "b":
            _kill_once(folder, cache, "prepared/*/work-target/checkpoints/epoch-1", "prepare", "config.yaml")
            assert not list(cache.glob("prepared/*/target"))  # killed before the target model was complete
            _kill_once(folder, cache, "run.partial/checkpoints/epoch-1", "run", "config.yaml")
            assert (folder / "run.partial").is_dir() and not (folder / "run").exists()
        _finish(folder, cache, "run", "config.yaml", *(["--resume"] if side == "b" else []))
        sides[side] = folder
    return sides


def test_prepare_killed_then_run_again_writes_the_same_models(two_sides):
    a, b = two_sides["a"], two_sides["b"]
    (key_a,), (key_b,) = [[p.name for p in (s / "cache" / "prepared").iterdir() if p.is_dir()] for s in (a, b)]
    assert key_a == key_b
    for role in ("target", "retain"):
        weights = [s / "cache" / "prepared" / key_a / role / "model.safetensors" for s in (a, b)]
        assert weights[0].read_bytes() == weights[1].read_bytes(), role
    assert not list((b / "cache" / "prepared" / key_b).glob("work-*"))  # the resumption state is gone


def test_run_killed_then_resumed_equals_the_uninterrupted_run(two_sides):
    a, b = (two_sides[s] / "run" for s in ("a", "b"))
    assert (a / "model" / "model.safetensors").read_bytes() == (b / "model" / "model.safetensors").read_bytes()
    results = [json.loads((run / "results.json").read_text()) for run in (a, b)]
    assert set(results[0]["models"]) == {"unlearned", "target", "retain"}
    for model in results[0]["models"]:
        assert results[0]["models"][model]["aggregates"] == results[1]["models"][model]["aggregates"], model
    assert results[0]["training"]["logs"] == results[1]["training"]["logs"]
