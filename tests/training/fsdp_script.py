"""Run by test_fsdp.py under ``accelerate launch --config_file examples/accelerate/fsdp.yaml --num_processes 2``
(CPU, gloo): accelerate does not shard on a CPU, so the loop's TorchFSDPEngine shards with torch's fully_shard.

Usage: fsdp_script.py OUT_DIR — trains the tiny Llama with each case of ``fsdp_cases`` and writes, from process 0,
the gathered final weights to OUT_DIR/final-<case>.safetensors, and from every process the bytes it held
(``TrainResult.footprint``) to OUT_DIR/footprint-<case>-<rank>.json. Then the NPO case again, stopped after step 3
(its epoch-1 checkpoint written), and resumed: OUT_DIR/final-npo-resumed.safetensors.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from safetensors.torch import save_model  # noqa: E402

from fsdp_cases import CASES, run_case  # noqa: E402


class Stop(Exception):
    pass


def stop_at(step, model, log):
    if step == 3:
        raise Stop


def main(out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    for case in CASES:
        model, result = run_case(case, out_dir / f"run-{case}", accumulation=1)
        (out_dir / f"footprint-{case}-{rank}.json").write_text(json.dumps(result.footprint))
        if rank == 0:
            save_model(model, str(out_dir / f"final-{case}.safetensors"))
    try:
        run_case("npo", out_dir / "run-npo-resumed", accumulation=1, on_step=stop_at)
    except Stop:
        pass
    model, _ = run_case("npo", out_dir / "run-npo-resumed", accumulation=1, resume=True)
    if rank == 0:
        save_model(model, str(out_dir / "final-npo-resumed.safetensors"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
