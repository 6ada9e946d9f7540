"""Peak memory of one optimizer step on SmolLM2-135M: AdamW against zeroth-order, ES and the others, and against
inference alone (issue #15's goal: zeroth-order and ES within 1.3× of inference; AdamW about 4×).

Each configuration runs in a fresh process (so one's peak cannot hide in another's), on the CPU unless a GPU is
present. The process loads the model (float32, the weights of ``smollm2-135m`` as unlearnkit caches them), builds
one batch of random token ids (``--batch`` rows of ``--length`` tokens, labels = inputs; memory does not depend on
the tokens), then takes one step of gradient ascent on that batch's mean NLL:

- ``inference``: the loss under ``torch.no_grad`` (one forward pass), the reference;
- ``adamw``: forward, backward, ``torch.optim.AdamW.step`` (its moments allocated at that first step);
- the closure optimizers (``zo``, ``adazo``, ``es``, ``sam``, ...): ``optimizer.step(closure)`` with
  :class:`unlearnkit.optim.closure.LossClosure` over the same loss.

Memory: on the CPU, the peak resident set (``VmHWM``) during the step minus the resident set before the model was
loaded (so the interpreter and libraries are left out, the weights counted); on a GPU,
``torch.cuda.max_memory_allocated``. The table gives each in MiB and as a multiple of inference.

    python benchmarks/optimizer_memory.py [--threads 1] [--batch 4] [--length 128] [--optimizers adamw,zo,es]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measurement import current_rss_bytes, peak_rss_bytes, reset_peak_rss, table

OPTIMIZERS = ["inference", "adamw", "zo", "es", "adazo", "sam"]
SETTINGS = {"zo": {"directions": 1}, "es": {"population": 8, "rank": 1}, "adazo": {}, "sam": {"perturb": "all"}}


def child(name: str, batch: int, length: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from unlearnkit.models.load import load_causal_lm
    from unlearnkit.models.smollm import export_smollm
    from unlearnkit.optim.closure import LossClosure
    from unlearnkit.optim.registry import build_optimizer
    from unlearnkit.runio import default_cache_dir

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    before_model = current_rss_bytes()
    model, _ = load_causal_lm(export_smollm(default_cache_dir() / "bases" / "smollm2-135m"))
    model.to(device).train()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=generator).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def forget_loss():
        return {"forget": -model(**inputs).loss}

    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset_peak_rss()
    start = time.perf_counter()
    if name == "inference":
        with torch.no_grad():
            forget_loss()
    elif name == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        forget_loss()["forget"].backward()
        optimizer.step()
    else:
        optimizer = build_optimizer(list(model.parameters()), name, SETTINGS.get(name, {}), 1e-6, 0.0)
        optimizer.step(LossClosure(forget_loss, model.parameters(), seed=0))
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if gpu else peak_rss_bytes() - before_model
    return {"name": name, "peak": peak, "weights": weights, "seconds": seconds, "device": str(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.length, args.threads)))
        return
    names = args.optimizers.split(",")
    if "inference" not in names:
        names.insert(0, "inference")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    results = {}
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--batch", str(args.batch), "--length",
                              str(args.length), "--threads", str(args.threads)], env=env, capture_output=True,
                             text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    reference = results["inference"]["peak"]
    mib = 2 ** 20
    rows = [(name, f"{r['peak'] / mib:.0f}", f"{r['peak'] / reference:.2f}x", f"{r['seconds']:.2f}")
            for name, r in results.items()]
    first = next(iter(results.values()))
    print(f"SmolLM2-135M, {first['weights'] / mib:.0f} MiB of float32 weights, one step on a batch of "
          f"{args.batch} x {args.length} tokens, {first['device']}, {args.threads} thread(s)")
    print(table(["step", "peak MiB", "x inference", "seconds"], rows))


if __name__ == "__main__":
    main()
