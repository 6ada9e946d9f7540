"""FSDP on two CPU processes (gloo) equals one process with accumulation 2, and each process holds half the state.

What is compared (definitions: torch FSDP2 ``fully_shard`` per-parameter sharding, Zhao et al. 2023,
arXiv:2304.11277; the loop's sharding rules in training/sharding.py): ``accelerate launch --config_file
examples/accelerate/fsdp.yaml --num_processes 2`` on a CPU, where accelerate itself does not shard and the loop's
TorchFSDPEngine applies ``fully_shard`` to each decoder layer and the root. The reference is the plain
single-process loop (no sharding, no collectives) with the same 4 micro-batch slots per step, so the two runs see
the same micro-batches and differ only in where the sums happen: the weights agree to float tolerance.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fsdp_cases import CASES, run_case
from training_fixtures import tiny_llama

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def launch(config_file: str, out_dir: Path, cpu: bool = True) -> Path:
    """``accelerate launch --config_file examples/accelerate/<config_file> --num_processes 2 fsdp_script.py``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "examples" / "accelerate" / config_file), "--num_processes", "2", "--mixed_precision", "no",
               str(HERE / "fsdp_script.py"), str(out_dir)]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return out_dir


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    """One 2-process FSDP launch on the CPU for the tests of this module; its output folder."""
    return launch("fsdp.yaml", tmp_path_factory.mktemp("fsdp"))


def assert_equals_one_process(out_dir: Path, tmp_path: Path, tolerance: float) -> dict:
    """Each case's gathered weights equal one process's with accumulation 2; returns each case's TrainResult."""
    initial = tiny_llama(seed=3).state_dict()
    results = {}
    for case in CASES:
        sharded = load_file(str(out_dir / f"final-{case}.safetensors"))
        one_process, results[case] = run_case(case, tmp_path / f"single-{case}", accumulation=2)
        trained = 0
        for key, value in one_process.state_dict().items():
            if key not in sharded:  # the tied head is saved once, under the embedding's name
                continue
            value = value.cpu()
            trained += not torch.equal(value, initial[key])
            torch.testing.assert_close(sharded[key], value, rtol=tolerance, atol=tolerance, msg=f"{case}: {key}")
        assert trained > 0, f"{case}: nothing was trained"
    return results


def test_fsdp_two_processes_equal_one_process_and_hold_half_the_state(fsdp_run, tmp_path):
    results = assert_equals_one_process(fsdp_run, tmp_path, tolerance=1e-5)
    for case in CASES:
        # each process holds about half of the weights, gradients and AdamW moments: the two shards add up to
        # what one process holds, and neither holds more than 0.6 of it (dim-0 shards of odd sizes differ by a row)
        whole = results[case].footprint
        ranks = [json.loads((fsdp_run / f"footprint-{case}-{rank}.json").read_text()) for rank in (0, 1)]
        for part in ("parameters", "gradients", "optimizer_state"):
            assert whole[part] > 0
            assert ranks[0][part] + ranks[1][part] == whole[part], (case, part, ranks, whole)
            assert max(r[part] for r in ranks) <= 0.6 * whole[part], (case, part, ranks, whole)


def test_fsdp_resume_from_sharded_checkpoint_is_exact(fsdp_run):
    """The NPO case stopped after step 3 and resumed from its epoch-1 checkpoint (torch.distributed.checkpoint
    shards of weights and AdamW state) ends with the same weights as the uninterrupted FSDP run."""
    resumed = load_file(str(fsdp_run / "final-npo-resumed.safetensors"))
    uninterrupted = load_file(str(fsdp_run / "final-npo.safetensors"))
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs: accelerate runs FSDP and DeepSpeed only on "
                                                           "accelerators (docs/scaling.md, GPU checks)")
@pytest.mark.parametrize("config_file", ["fsdp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_accelerate_engines_on_two_gpus_equal_one_process(config_file, tmp_path):
    """AccelerateEngine: accelerate prepares the model, optimizer and scheduler; the same comparison as on the CPU
    (looser tolerance: GPU kernels), and the resumed run equals the uninterrupted one."""
    if config_file.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install deepspeed)")
    out_dir = launch(config_file, tmp_path / "launch", cpu=False)
    assert_equals_one_process(out_dir, tmp_path, tolerance=1e-4)
    resumed = load_file(str(out_dir / "final-npo-resumed.safetensors"))
    uninterrupted = load_file(str(out_dir / "final-npo.safetensors"))
    for key in resumed:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=1e-5, atol=1e-5, msg=key)
