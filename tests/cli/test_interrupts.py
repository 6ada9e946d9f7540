"""Ctrl-C and SIGTERM during ``unlearnkit run``: one line naming the resume command, exit 130 / 143, the ``.partial``
folder kept with its checkpoints, and ``--resume`` finishing the run as if it had never stopped.

The runs are real subprocesses (``python -m unlearnkit``) on a small synthetic task; they inherit the environment,
so the models prepared for them are shared through the session's unlearnkit cache (tests/conftest.py).
"""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import unlearnkit
from unlearnkit.runio import atomic_dir

SRC = Path(__file__).resolve().parents[2] / "src"
CONFIG = {
    "task": {"source": "synthetic", "options": {"n_people": 8, "forget_people": 2, "holdout_people": 2}},
    "model": {"base": "tiny", "max_length": 96},
    "prepare": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5},
    "method": {"name": "npo"},
    # many short epochs: a checkpoint appears early, and training goes on well after it
    "train": {"epochs": 10, "batch_size": 4, "learning_rate": 5e-4, "warmup_steps": 0, "schedule": "constant"},
    "eval": {"batch_size": 32, "max_new_tokens": 12},
}


def _config(tmp_path: Path, name: str) -> tuple[Path, dict]:
    cfg = copy.deepcopy(CONFIG)
    cfg["output_dir"] = str(tmp_path / name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    env["OMP_NUM_THREADS"] = "1"  # as the test process (tests/conftest.py): the same arithmetic, no contention
    return env


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    # SIGINT back to its default in the child: a parent that ignores it (a background job) would make Python ignore it
    return subprocess.Popen([sys.executable, "-m", "unlearnkit", *args], cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt_after_first_checkpoint(proc: subprocess.Popen, partial: Path, signum: int) -> tuple[str, str]:
    checkpoints = partial / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints.is_dir() and any(p.name.startswith("epoch-") for p in checkpoints.iterdir())):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before its first checkpoint:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within 120 s")
        time.sleep(0.05)
    proc.send_signal(signum)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def _interrupt_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return lines[0]


def _checkpoints(partial: Path) -> list[str]:
    return sorted(p.name for p in (partial / "checkpoints").iterdir() if not p.name.startswith("."))


def test_sigterm_keeps_the_partial_run_and_resume_finishes_it(tmp_path):
    path, cfg = _config(tmp_path, "run")
    partial = tmp_path / "run.partial"
    proc = _start(["run", str(path), "--quiet"], tmp_path)
    out, err = _interrupt_after_first_checkpoint(proc, partial, signal.SIGTERM)

    assert proc.returncode == 143, err[-3000:]
    line = _interrupt_line(err)
    assert line == (f"interrupted: {partial} keeps the last checkpoint; continue with: "
                    f"unlearnkit run {path} --quiet --resume")
    assert not (tmp_path / "run").exists() and _checkpoints(partial)
    assert (partial / "config.yaml").is_file()
    interrupted_at = json.loads((partial / "checkpoints" / _checkpoints(partial)[-1] / "state.json").read_text())["step"]

    resumed = subprocess.run([sys.executable, "-m", "unlearnkit", "run", str(path), "--quiet", "--resume"],
                             cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not partial.exists()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0 < interrupted_at < results["training"]["steps"]  # it did stop mid-training

    # the same config, uninterrupted (in this process): the same training and the same metrics
    cfg["output_dir"] = str(tmp_path / "straight")
    straight = unlearnkit.unlearn(cfg, progress=False).results
    assert [s["loss"] for s in results["training"]["logs"]] == pytest.approx(
        [s["loss"] for s in straight["training"]["logs"]], rel=1e-5, abs=1e-7)
    got, want = results["models"]["unlearned"]["aggregates"], straight["models"]["unlearned"]["aggregates"]
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-6, nan_ok=True), name


def test_ctrl_c_exits_130_and_keeps_the_partial_run(tmp_path):
    path, _ = _config(tmp_path, "run")
    partial = tmp_path / "run.partial"
    proc = _start(["run", str(path), "--output-dir", str(tmp_path / "other")], tmp_path)
    out, err = _interrupt_after_first_checkpoint(proc, tmp_path / "other.partial", signal.SIGINT)

    assert proc.returncode == 130, err[-3000:]
    line = _interrupt_line(err)
    other = tmp_path / "other.partial"
    assert line == (f"interrupted: {other} keeps the last checkpoint; continue with: "
                    f"unlearnkit run {path} --output-dir {tmp_path / 'other'} --resume")
    assert _checkpoints(other) and not partial.exists() and not (tmp_path / "other").exists()


def test_atomic_dir_removes_its_temporary_folder_on_ctrl_c(tmp_path):
    final = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as tmp:
            (tmp / "weights").write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
