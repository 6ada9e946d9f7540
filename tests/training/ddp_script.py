"""Run by test_two_processes.py under ``accelerate launch --multi_gpu --num_processes 2`` (CPU, gloo).

Usage: ddp_script.py OUT_DIR — trains the tiny Llama with the settings of ``run_two_process_setup`` for 7 and for
5 forget examples and writes the final weights (process 0) to OUT_DIR/final-7.safetensors and final-5.safetensors.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from safetensors.torch import save_model  # noqa: E402

from training_fixtures import run_two_process_setup  # noqa: E402
from unlearnkit.training import gradient_sync  # noqa: E402


def main(out_dir: Path) -> None:
    gradient_sync.BUCKET_ELEMENTS = 3000  # several all-reduce buckets, one tensor (the 2048-element embedding) alone
    for n_forget in (7, 5):
        model = run_two_process_setup(out_dir / f"run-{n_forget}", gradient_accumulation_steps=1, n_forget=n_forget)
        if torch.distributed.get_rank() == 0:
            save_model(model, str(out_dir / f"final-{n_forget}.safetensors"))
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
