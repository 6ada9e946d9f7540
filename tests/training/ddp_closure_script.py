"""Run by test_loop_closure_optimizers.py under ``accelerate launch --multi_gpu --num_processes 2`` (CPU, gloo).

Usage: ddp_closure_script.py OUT_DIR — trains ``closure_run`` with accumulation 1 for each optimizer of
TWO_PROCESS_OPTIMIZERS and writes the final weights (process 0) to OUT_DIR/final-<name>.safetensors.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from closure_fixtures import TWO_PROCESS_OPTIMIZERS, closure_run
from safetensors.torch import save_model


def main(out_dir: Path) -> None:
    for name, optimizer in TWO_PROCESS_OPTIMIZERS.items():
        model = closure_run(out_dir / f"run-{name}", gradient_accumulation_steps=1, optimizer=optimizer)
        if torch.distributed.get_rank() == 0:
            save_model(model, str(out_dir / f"final-{name}.safetensors"))
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
