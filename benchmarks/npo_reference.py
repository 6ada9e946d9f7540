"""NPO step time and peak memory: precomputed reference log-probs (unlearnkit) versus a live reference model.

unlearnkit's :class:`~unlearnkit.methods.npo.NPO` computes log pi_ref(y|x) of every forget example once, in
``prepare``, and looks it up during training. The reference implementations (the NPO repository, OpenUnlearning)
keep a frozen copy of the model instead and run it on every forget batch. :class:`LiveReferenceNPO` below is that
variant: the same loss, with log pi_ref(y|x) from a frozen copy (eval mode, no gradient) at every step.

One step = zero_grad, the NPO loss (forget batch + retain batch with ``--retain-loss nll``, unlearnkit's
default NPO), backward, ``AdamW.step``. Both variants see the same batches, in the same order.

- Time: both variants in this process, on two copies of the same initial model, their steps interleaved
  (precomputed then live on even steps, live then precomputed on odd ones) so that a slow-down of a shared
  machine falls on both; the median over ``--steps`` timed steps after ``--warmup-steps`` untimed ones.
  ``prepare`` is timed apart (one forward pass over the forget set for the precomputed variant, a model copy for
  the live one).
- Memory: each variant alone in a fresh process (this script started again with ``--worker VARIANT``): load the
  model and build the batches, reset the peak RSS (``/proc/self/clear_refs``) and record the RSS, then
  ``prepare``, AdamW and ``--memory-steps`` steps; the growth of the peak RSS (Linux ``VmHWM``, the mark
  ``getrusage().ru_maxrss`` reports) above the recorded RSS covers the reference copy, gradients, AdamW state
  and activations.
- Check: the step-0 losses of both variants, in the timing process and in the memory processes, and the losses of
  every step of the timing run, must agree to ``--tolerance`` (exit status 1 otherwise). Step 0 shows that the
  two compute the same loss; the later steps show that the live reference stays the initial model (a reference
  that followed the trained model would still agree at step 0).

Examples::

    python benchmarks/npo_reference.py                    # SmolLM2-135M, batch 4, synthetic forget set
    python benchmarks/npo_reference.py --model tiny --steps 10

Nothing is written unless ``--json PATH`` is given (except that the first ``--model smollm2-135m`` run fills
unlearnkit's model cache, see ``subjects.py``).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ("precomputed", "live")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from subjects import add_subject_options, positive_int

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_subject_options(parser, default_model="smollm2-135m")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="forget and retain rows per step")
    parser.add_argument("--steps", type=positive_int, default=3, help="timed optimizer steps per variant")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first (AdamW allocates its state)")
    parser.add_argument("--memory-steps", type=positive_int, default=2, help="steps of each memory-measuring process")
    parser.add_argument("--retain-loss", choices=("nll", "none"), default="nll",
                        help="NPO's retain term: nll (unlearnkit's default NPO+GD) or none (plain NPO)")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest allowed |live - precomputed| loss difference")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results to this JSON file")
    parser.add_argument("--worker", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    return args


def live_reference_npo_class():
    """:class:`LiveReferenceNPO`, defined on first use so that the parent imports torch only after its workers ran."""
    import torch

    from unlearnkit.methods.losses import forward_logits, retain_term, sequence_nll
    from unlearnkit.methods.npo import NPO, npo_loss

    class LiveReferenceNPO(NPO):
        """NPO with log pi_ref(y|x) from a frozen copy of the initial model, run on every forget batch.

        The reference implementations' way (licong-lin/negative-preference-optimization ``TOFU/dataloader.py``,
        OpenUnlearning ``NPO``): ``prepare`` keeps a deep copy of the untouched model in eval mode without
        gradients; ``loss`` is NPO's, with the reference term computed live instead of looked up.
        """

        def prepare(self, model, forget_batches, reference_model=None) -> None:
            self._live_reference = copy.deepcopy(model).eval().requires_grad_(False)

        def loss(self, model, forget_batch, retain_batch):
            logprob = -sequence_nll(forward_logits(model, forget_batch), forget_batch["labels"])
            with torch.no_grad():
                reference = -sequence_nll(forward_logits(self._live_reference, forget_batch), forget_batch["labels"])
            forget_loss = npo_loss(logprob, reference, self.beta)
            loss = self.forget_weight * forget_loss
            logs = {"forget_loss": forget_loss.item(), "log_ratio": (logprob - reference).mean().item()}
            if self.retain_loss is not None:
                retain_loss = retain_term(self.retain_loss, model, retain_batch, None)
                loss = loss + self.retain_weight * retain_loss
                logs["retain_loss"] = retain_loss.item()
            return loss, logs

    return LiveReferenceNPO


def step_batches(forget, retain, steps: int, batch_size: int, pad_token_id: int, seed: int):
    """(forget batch, retain batch or None) of every step: forget rows in order (cycling), retain rows sampled."""
    from unlearnkit.training.batches import forget_batch, retain_batch

    rng = random.Random(seed)
    batches = []
    for step in range(steps):
        positions = [(step * batch_size + i) % len(forget) for i in range(batch_size)]
        retain_rows = (retain_batch(retain, rng.sample(range(len(retain)), batch_size), pad_token_id)
                       if retain is not None else None)
        batches.append((forget_batch(forget, positions, pad_token_id), retain_rows))
    return batches


class NPOSetup:
    """The model, the step batches, the prepare batches and the two NPO classes, loaded in the current process."""

    def __init__(self, args: argparse.Namespace):
        from subjects import load_model, load_task, set_threads
        from unlearnkit.data.formatting import QAFormatter
        from unlearnkit.methods.npo import NPO
        from unlearnkit.training.batches import all_forget_batches

        self.args = args
        self.threads = set_threads(args.threads)
        self.task = load_task(args)
        self.model, tokenizer = load_model(args.model, self.task, args.seed)
        formatter = QAFormatter(tokenizer)
        self.forget = [formatter.encode(ex.question, ex.answer) for ex in self.task.forget]
        self.retain_loss = None if args.retain_loss == "none" else args.retain_loss
        retain = [formatter.encode(ex.question, ex.answer) for ex in self.task.retain] if self.retain_loss else None
        steps = max(args.warmup_steps + args.steps, args.memory_steps)
        self.batches = step_batches(self.forget, retain, steps, args.batch_size, formatter.pad_token_id, args.seed)
        self.prepare_batches = all_forget_batches(self.forget, args.batch_size, formatter.pad_token_id)
        self.method_classes = {"precomputed": NPO, "live": live_reference_npo_class()}

    def prepared(self, variant: str, model):
        """(method, optimizer, seconds) after ``prepare`` on ``model`` (left in train mode) and AdamW's creation."""
        import torch

        start = time.perf_counter()
        method = self.method_classes[variant](retain_loss=self.retain_loss)
        model.eval()
        method.prepare(model, self.prepare_batches)
        model.train()
        optimizer = torch.optim.AdamW(method.trainable_parameters(model), lr=self.args.learning_rate,
                                      weight_decay=0.01)
        return method, optimizer, time.perf_counter() - start

    def describe(self) -> dict:
        from subjects import describe_model, parameter_count

        return {"model": describe_model(self.args.model, self.model), "task": self.task.name,
                "threads": self.threads, "parameters": parameter_count(self.model),
                "parameter_bytes": sum(p.numel() * p.element_size() for p in self.model.parameters()),
                "mean_sequence_tokens": sum(len(e.input_ids) for e in self.forget) / len(self.forget)}


def optimizer_step(method, model, optimizer, forget_rows, retain_rows) -> tuple[float, float]:
    """One zero_grad + loss + backward + AdamW step; returns (seconds, loss)."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss, _ = method.loss(model, forget_rows, retain_rows)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start, loss.item()


def warm_up_forward(model, batch: dict) -> None:
    import torch

    from unlearnkit.methods.losses import forward_logits

    with torch.no_grad():
        forward_logits(model, batch)


def run_memory_worker(args: argparse.Namespace) -> dict:
    """Peak RSS growth of one variant: ``prepare``, AdamW and ``--memory-steps`` steps, measured in this process."""
    from measurement import current_rss_bytes, peak_rss_bytes, reset_peak_rss

    setup = NPOSetup(args)
    gc.collect()
    peak_was_reset = reset_peak_rss()
    rss_before = current_rss_bytes()
    method, optimizer, _ = setup.prepared(args.worker, setup.model)
    losses = [optimizer_step(method, setup.model, optimizer, *batch)[1]
              for batch in setup.batches[: args.memory_steps]]
    peak = peak_rss_bytes()
    growth = peak - rss_before if peak_was_reset and rss_before is not None else None
    return {"variant": args.worker, "losses": losses, "rss_before_bytes": rss_before, "peak_rss_bytes": peak,
            "peak_rss_growth_bytes": growth}


def run_memory_worker_process(variant: str, argv: list[str]) -> dict:
    """Start this script in a fresh Python process for ``variant`` and read its JSON result (last stdout line)."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--worker", variant],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the {variant} memory worker failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_timing(args: argparse.Namespace) -> dict:
    """Both variants in this process on two copies of the same model, their steps interleaved.

    Step k runs (precomputed, live) for even k and (live, precomputed) for odd k, so that a slow-down of a shared
    machine falls on both. The first ``--warmup-steps`` steps are not timed.
    """
    setup = NPOSetup(args)
    models = {"precomputed": setup.model, "live": copy.deepcopy(setup.model)}
    warm_up_forward(setup.model, setup.prepare_batches[0])  # first-call costs must not land on one prepare
    prepared = {variant: setup.prepared(variant, models[variant]) for variant in VARIANTS}
    step_s: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    losses: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for step, batch in enumerate(setup.batches[: args.warmup_steps + args.steps]):
        for variant in (VARIANTS if step % 2 == 0 else VARIANTS[::-1]):
            method, optimizer, _ = prepared[variant]
            seconds, loss = optimizer_step(method, models[variant], optimizer, *batch)
            step_s[variant].append(seconds)
            losses[variant].append(loss)
    return {**setup.describe(), "variants": {
        variant: {"prepare_s": prepared[variant][2], "step_s": step_s[variant][args.warmup_steps:],
                  "warmup_step_s": step_s[variant][: args.warmup_steps], "losses": losses[variant]}
        for variant in VARIANTS}}


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f}"


def report(args: argparse.Namespace, timing: dict, memory: dict[str, dict]) -> dict:
    from measurement import median, spread, table

    times = timing["variants"]
    print(f"model: {timing['model']}; parameters {mib(timing['parameter_bytes'])} MiB (one model copy)")
    retain_rows = 0 if args.retain_loss == "none" else args.batch_size
    print(f"task: {timing['task']}; {len(timing['variants']['live']['losses'])} steps on forget sequences of "
          f"{timing['mean_sequence_tokens']:.0f} tokens on average; batch {args.batch_size} forget + {retain_rows} "
          f"retain rows; retain loss {args.retain_loss}; AdamW lr {args.learning_rate:g}")
    print(f"threads: torch.set_num_threads({args.threads}) -> {timing['threads']}")
    print(f"time: both variants in one process, steps interleaved, {args.warmup_steps} warm-up + {args.steps} timed "
          f"steps each; memory: each variant alone in a fresh process, prepare + AdamW + {args.memory_steps} steps")
    print()
    rows = []
    for variant in VARIANTS:
        growth = memory[variant]["peak_rss_growth_bytes"]
        rows.append([variant, f"{median(times[variant]['step_s']):.3f}", spread(times[variant]["step_s"]),
                     f"{times[variant]['prepare_s']:.2f}", mib(growth) if growth is not None else "n/a",
                     mib(memory[variant]["peak_rss_bytes"]), f"{times[variant]['losses'][0]:.7f}"])
    print(table(["reference", "step median s", "min-max", "prepare s", "peak RSS growth MiB", "peak RSS MiB",
                 "step-0 loss"], rows))

    time_ratio = median(times["live"]["step_s"]) / median(times["precomputed"]["step_s"])
    print(f"\nlive/precomputed step time = {time_ratio:.3f}")
    summary: dict = {"step_time_ratio_live_over_precomputed": time_ratio}
    growths = {variant: memory[variant]["peak_rss_growth_bytes"] for variant in VARIANTS}
    if None not in growths.values():
        memory_ratio = growths["live"] / growths["precomputed"]
        extra_copies = (growths["live"] - growths["precomputed"]) / timing["parameter_bytes"]
        print(f"live/precomputed peak RSS growth = {memory_ratio:.3f}; "
              f"the live reference costs {extra_copies:.2f} model copies more")
        summary.update(memory_growth_ratio_live_over_precomputed=memory_ratio, extra_model_copies=extra_copies)
    else:
        print("peak RSS growth unavailable (the peak could not be reset on this system); compare peak RSS instead")
    step0 = [times[v]["losses"][0] for v in VARIANTS] + [memory[v]["losses"][0] for v in VARIANTS]
    loss_difference = max(step0) - min(step0)
    every_step = max(abs(a - b) for a, b in zip(times["precomputed"]["losses"], times["live"]["losses"]))
    verdict = "OK" if max(loss_difference, every_step) <= args.tolerance else "FAILED"
    print(f"loss check (tolerance {args.tolerance:g}): {verdict}; largest |live - precomputed| at step 0 over "
          f"the three processes {loss_difference:.2e}, over all {len(times['live']['losses'])} steps of the "
          f"timing run {every_step:.2e}")
    return {"command": " ".join([Path(sys.executable).name, *sys.argv]), **summary,
            "step0_loss_difference": loss_difference, "all_steps_loss_difference": every_step,
            "loss_check": verdict, "timing": timing, "memory": memory}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_memory_worker(args)))
        return 0
    memory = {variant: run_memory_worker_process(variant, argv) for variant in VARIANTS}
    timing = run_timing(args)
    summary = report(args, timing, memory)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["loss_check"] == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
