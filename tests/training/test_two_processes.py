"""Two CPU processes (gloo) with accumulation 1 give the same weights as one process with accumulation 2."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_model

from training_fixtures import run_two_process_setup, tiny_llama

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def test_two_processes_equal_one_process_with_accumulation(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(HERE / "ddp_script.py"), str(tmp_path)]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    initial = tiny_llama(seed=3).state_dict()
    for n_forget in (7, 5):  # 7: the last step splits 2 + 1; 5: the last step leaves the second process idle
        two_processes = tiny_llama(seed=0)
        load_model(two_processes, str(tmp_path / f"final-{n_forget}.safetensors"))
        one_process = run_two_process_setup(tmp_path / f"single-{n_forget}", gradient_accumulation_steps=2,
                                            n_forget=n_forget)
        for key, value in one_process.state_dict().items():
            assert not torch.equal(value, initial[key]), f"{key} was not trained"
            torch.testing.assert_close(two_processes.state_dict()[key], value, rtol=1e-5, atol=1e-5,
                                       msg=f"{n_forget} examples, {key}")
