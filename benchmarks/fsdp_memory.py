"""Per-process state of FSDP with 2 ranks against one process: bytes of parameters, gradients and optimizer state
(issue #14; goal: FSDP per-rank state ≤ 0.6× one process's).

Both settings run the real training loop (:func:`unlearnkit.training.loop.train`) for ``--steps`` NPO steps
(AdamW, batch 4 × ``--tokens`` random tokens, the model loaded the same way in every process) and read
``TrainResult.footprint``: after the last optimizer step, the bytes each process holds of the parameters (a DTensor's
local shard under FSDP), their gradients and the AdamW moments. ``one``: a plain process; ``fsdp``: ``accelerate
launch --config_file examples/accelerate/fsdp.yaml --num_processes 2`` on the CPU (gloo), where the loop shards with
torch's ``fully_shard``. Also reported: each process's peak resident memory above its memory before the model was
loaded, and the median step time after the first (a CPU figure: the two ranks share the machine's cores).

Peak RSS is not the state: under FSDP on the CPU each process also holds the caller's whole model (the loop trains a
sharded copy and gathers the weights back into it at the end) and one all-gathered decoder layer at a time.
Example::

    python benchmarks/fsdp_memory.py --model tiny
    python benchmarks/fsdp_memory.py --model smollm2-135m --tokens 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from measurement import current_rss_bytes  # noqa: E402

PARTS = ("parameters", "gradients", "optimizer_state")




def one(model_name: str, tokens: int, steps: int, out: Path) -> None:
    """Train in this process (one of the launched ranks, or alone) and write its row to ``out/rank-<r>.json``."""
    import torch

    from subjects import load_model
    from unlearnkit.data.formatting import Encoded
    from unlearnkit.data.synthetic import make_synthetic_task
    from unlearnkit.methods import get_method
    from unlearnkit.training.config import TrainConfig
    from unlearnkit.training.loop import train

    task = make_synthetic_task(seed=0)
    before = current_rss_bytes() / 2**20
    model, tokenizer = load_model(model_name, task, seed=0)
    generator = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(4):
        ids = torch.randint(3, len(tokenizer), (tokens,), generator=generator).tolist()
        examples.append(Encoded(ids, [-100] * (tokens // 2) + ids[tokens // 2:], tokens // 2))
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    config = TrainConfig(max_steps=steps, batch_size=4 // ranks, learning_rate=1e-5, warmup_steps=0,
                         schedule="constant", save_every_epoch=False)
    times, last = [], [time.perf_counter()]

    def on_step(step, m, log):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as scratch:
        result = train(model, get_method("npo"), examples, examples, None, tokenizer.pad_token_id or 0, config,
                       Path(scratch) / "run", progress=False, on_step=on_step)
    later = sorted(times[1:]) or times
    row = {**result.footprint, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before,
           "step_seconds": later[len(later) // 2], "parameter_count": sum(p.numel() for p in model.parameters())}
    (out / f"rank-{os.environ.get('RANK', '0')}.json").write_text(json.dumps(row))
    if ranks > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def run_setting(setting: str, args, out: Path) -> list[dict]:
    out.mkdir(parents=True)
    common = [str(Path(__file__)), "--one", str(out), "--model", args.model, "--tokens", str(args.tokens),
              "--steps", str(args.steps)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}
    if setting == "one":
        command = [sys.executable, *common]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(ROOT / "examples" / "accelerate" / "fsdp.yaml"), "--num_processes", "2",
                   "--mixed_precision", "no", *common]
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "smollm2-135m"), default="tiny")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.model, args.tokens, args.steps, Path(args.one))
        return
    with tempfile.TemporaryDirectory() as scratch:
        rows = {setting: run_setting(setting, args, Path(scratch) / setting) for setting in ("one", "fsdp")}
    alone = rows["one"][0]
    print(f"{args.model} ({alone['parameter_count']:,} parameters), NPO + AdamW, batch 4 × {args.tokens} tokens, "
          f"{args.steps} steps, float32, CPU")
    print(f"{'process':<12}" + "".join(f"{p + ' MiB':>22}{'×':>6}" for p in PARTS)
          + f"{'state ×':>9}{'peak RSS MiB':>14}{'step s':>8}")
    for name, row in [("1 process", alone)] + [(f"FSDP rank {i}", r) for i, r in enumerate(rows["fsdp"])]:
        state = sum(row[p] for p in PARTS) / sum(alone[p] for p in PARTS)
        print(f"{name:<12}" + "".join(f"{row[p] / 2**20:>22.2f}{row[p] / alone[p]:>6.2f}" for p in PARTS)
              + f"{state:>9.2f}{row['peak_mib']:>14.0f}{row['step_seconds']:>8.2f}")


if __name__ == "__main__":
    main()
