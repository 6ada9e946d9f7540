"""The time of each robustness attack at its default budget, on one model.

Every attack runs through its public function with the budget of the config classes' defaults
(``AttacksConfig()``: ``RelearnAttackConfig``, ``QuantizeAttackConfig``, ``SuffixAttackConfig``,
``LatentAttackConfig``, ``AttacksConfig.metrics``; ``EvalConfig()`` for the evaluation batch size and
``max_new_tokens``; ``ModelConfig()`` for the formatter; ``RunConfig().seed``), called the way
``unlearnkit.attacks.suite.run_attacks`` calls it, on **one** model. ``unlearnkit attack`` runs each attack on three
models (unlearned, target, retain) and relearning once more as its control (the unlearned model fine-tuned on
retain examples); the suffix search runs once, its evaluations three times. So the command's wall time is about
3 to 4 times the per-model time below. ``reference`` (the retain model's statistics) is ``None`` here: the default
attack metrics do not read it.

Modes:

- ``full``: each attack runs to completion; the time inside the evaluations (and, for quantization, inside the
  quantized reloads) is recorded during the same call by wrapping those functions in the attack's module.
- ``per-step``: for a model where a full default run does not fit a few minutes. The attack runs through the same
  public function with a shortened budget and on the first ``--eval-examples`` examples of every evaluation split,
  and the unit costs are read from that call: one relearning optimizer step (median of ``--repeats`` steps after a
  warm-up step), one evaluation, one quantized reload and its evaluation per scheme, one GCG step (the default
  candidates, top-k, suffix length and examples; median of ``--repeats``), one latent PGD step with and one without
  a gradient (median) and the residual-norm pass. An evaluation of the full task is extrapolated from the one on
  the first examples: the seconds inside ``score_pairs`` scale with the number of distinct planned pairs, the rest
  (greedy generation, planning, metrics) with the number of questions generated, both counted by
  ``plan_tofu`` for the full and the shortened task. The total is the measured short call with its steps extended
  to the default count at the median step time and its evaluations replaced by full-task ones:
  **extrapolated from measured unit costs**, printed as such.

Models: ``tiny`` (the built-in base with its task-trained tokenizer and random weights: a random-weight model never
emits EOS, so every generated answer runs to ``max_new_tokens``: an upper bound for a trained model) or
``smollm2-135m`` (SmolLM2-135M-Instruct as shipped, see ``subjects.py``). Examples::

    python benchmarks/attack_times.py --model tiny --mode full --attacks relearn
    python benchmarks/attack_times.py --model smollm2-135m --mode per-step --attacks latent

``--threads`` defaults to 1 here (the machine these numbers come from is shared). Nothing is written unless
``--json PATH`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from measurement import median, spread, table  # noqa: E402
from subjects import EVALUATION_SPLITS, add_subject_options, describe_model, load_model, load_task, positive_int, set_threads  # noqa: E402
import importlib  # noqa: E402
from unlearnkit.attacks.latent import latent_probe  # noqa: E402
from unlearnkit.attacks.quantize import quantize_attack  # noqa: E402
from unlearnkit.attacks.relearn import evaluation_steps, pick_examples, relearn  # noqa: E402
from unlearnkit.attacks.suffix import (PARAPHRASE_METRICS, SUFFIX_METRICS, evaluate_paraphrased,  # noqa: E402
                                       evaluate_with_suffix, optimize_suffix, paraphrased_examples)
from unlearnkit.config import AttacksConfig, EvalConfig, ModelConfig, RunConfig  # noqa: E402
from unlearnkit.data.formatting import QAFormatter  # noqa: E402
from unlearnkit.data.types import Task  # noqa: E402
from unlearnkit.errors import UnlearnkitError  # noqa: E402
from unlearnkit.evaluation.evaluator import Evaluator  # noqa: E402
from unlearnkit.evaluation.suites import tofu as suite# noqa: E402

# the modules themselves (``unlearnkit.attacks.relearn`` the attribute is the function, hence import_module)
relearn_module = importlib.import_module("unlearnkit.attacks.relearn")
quantize_module = importlib.import_module("unlearnkit.attacks.quantize")
suffix_module = importlib.import_module("unlearnkit.attacks.suffix")
latent_module = importlib.import_module("unlearnkit.attacks.latent")

ATTACKS = ("relearn", "quantize", "suffix", "latent")
EXTRAPOLATED = "extrapolated from measured unit costs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_subject_options(parser, default_model="tiny")
    parser.set_defaults(threads=1)
    parser.add_argument("--attacks", default=",".join(ATTACKS),
                        help=f"comma-separated, from {','.join(ATTACKS)} (default: all)")
    parser.add_argument("--mode", choices=("full", "per-step"), default="full",
                        help="full: run each attack to completion; per-step: measure unit costs and extrapolate")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="per-step: timed relearning / GCG / PGD steps after the first (default 3)")
    parser.add_argument("--eval-examples", type=positive_int, default=8, metavar="N",
                        help="per-step: evaluations run on the first N examples of each evaluation split (default 8)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    chosen = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = sorted(set(chosen) - set(ATTACKS))
    if unknown or not chosen:
        parser.error(f"--attacks: unknown {unknown}: choose from {', '.join(ATTACKS)}")
    args.attacks = chosen
    return args


# ------------------------------------------------------------------------------------------------ recording calls

@dataclass
class Call:
    """One recorded call: wall-clock start and end (``time.perf_counter``), its arguments, and extra marks."""

    start: float
    end: float = 0.0
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    marks: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.end - self.start


@contextmanager
def recorded(owner, name: str, calls: list[Call], wrap_kwargs=None):
    """Replace ``owner.<name>`` by a wrapper that appends a :class:`Call` to ``calls`` for every call; restored on
    exit. ``wrap_kwargs(call, kwargs)`` may change the keyword arguments passed on (e.g. wrap a callback)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        call = Call(time.perf_counter(), args=args, kwargs=kwargs)
        calls.append(call)
        if wrap_kwargs is not None:
            kwargs = wrap_kwargs(call, kwargs)
        try:
            return original(*args, **kwargs)
        finally:
            call.end = time.perf_counter()

    setattr(owner, name, wrapper)
    try:
        yield calls
    finally:
        setattr(owner, name, original)


@dataclass
class Evaluation:
    """One ``Evaluator.evaluate`` call: its seconds, the seconds inside ``score_pairs``, and what it planned."""

    seconds: float
    scoring: float
    pairs: int  # distinct planned pairs
    questions: int  # questions generated

    def scaled_to(self, pairs: int, questions: int) -> float:
        """The seconds of an evaluation planning ``pairs`` distinct pairs and ``questions`` questions: the scoring
        seconds scale with the pairs, the rest (generation, planning, metrics) with the questions (with the pairs
        when nothing was generated)."""
        rest = self.seconds - self.scoring
        rest_scale = questions / self.questions if self.questions else pairs / self.pairs
        return self.scoring * pairs / self.pairs + rest * rest_scale


def plan_counts(task: Task, metrics) -> tuple[int, int]:
    """(distinct planned pairs, questions generated) of ``evaluate_tofu(task, metrics=metrics)``."""
    plan = suite.plan_tofu(task, suite.resolve_metrics(metrics))
    return len(set(plan.pairs)), len(plan.questions)


@contextmanager
def evaluations(out: list[Evaluation]):
    """Record every ``Evaluator.evaluate`` call (each attack evaluates through one; as :class:`Evaluation`)."""
    calls: list[Call] = []
    scoring: list[Call] = []
    with recorded(Evaluator, "evaluate", calls), recorded(suite, "score_pairs", scoring):
        yield out
    for call in calls:
        evaluator = call.args[0]
        metrics = call.kwargs.get("metrics")
        inside = sum(s.seconds for s in scoring if call.start <= s.start and s.end <= call.end)
        out.append(Evaluation(call.seconds, inside,
                              *plan_counts(evaluator.task, evaluator.metrics if metrics is None else metrics)))


def first_examples(task: Task, n: int) -> Task:
    """``task`` with only the first ``n`` examples of every evaluation split and of the holdout."""
    kept = {name: getattr(task, name)[:n] for name in EVALUATION_SPLITS}
    return replace(task, name=f"{task.name}-first{n}", **kept)


def paraphrased_task(task: Task) -> Task:
    """The task ``evaluate_paraphrased`` evaluates (its eval_forget examples with a paraphrased question)."""
    return Task(name=f"{task.name}-paraphrased", forget=task.forget, retain=task.retain,
                eval_forget=paraphrased_examples(task.eval_forget))


# ------------------------------------------------------------------------------------------------ the settings

@dataclass
class Defaults:
    """The defaults ``unlearnkit attack`` runs with, read from the config classes."""

    attacks: AttacksConfig = field(default_factory=AttacksConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = field(default_factory=lambda: RunConfig().seed)

    def evaluator(self, task: Task, formatter: QAFormatter) -> Evaluator:
        """The attacks' evaluator, as ``run_attacks`` builds it (no result store; no progress bars here)."""
        return Evaluator(task, formatter, self.eval, metrics=self.attacks.metrics, store=False, progress=False)

    @property
    def metrics(self) -> set[str]:
        return set(self.attacks.metrics)


@dataclass
class Row:
    attack: str
    budget: str
    seconds: float | None  # measured (full) or extrapolated (per-step); None when the attack could not run
    how: str
    detail: dict = field(default_factory=dict)


def budget_text(attack: str, d: Defaults, model, task: Task) -> str:
    a = d.attacks
    if attack == "relearn":
        r = a.relearn
        return (f"{r.steps} steps, batch {r.batch_size}, {min(r.examples, len(task.forget))} examples, "
                f"{len(evaluation_steps(r.steps, r.eval_every))} evaluations")
    if attack == "quantize":
        return f"full + {', '.join(a.quantize.schemes)}: {1 + len(a.quantize.schemes)} evaluations"
    if attack == "suffix":
        s = a.suffix
        return (f"{s.steps} GCG steps, {s.candidates} candidates, top-k {s.top_k}, {s.suffix_length} tokens, "
                f"{min(s.examples, len(task.forget))} examples; 2 evaluations")
    lc = a.latent
    positive = sum(e > 0 for e in sorted(set(lc.epsilons)))
    layer = lc.layer if lc.layer is not None else model.config.num_hidden_layers // 2
    return (f"{positive} eps x {lc.steps} PGD steps, {lc.scope}, layer {layer}, "
            f"{len(task.eval_forget)} examples")


# ------------------------------------------------------------------------------------------------ full mode

def full_relearn(model, formatter, task, d: Defaults) -> Row:
    r = d.attacks.relearn
    examples = pick_examples(task.forget, min(r.examples, len(task.forget)), seed=d.seed)
    evals: list[Evaluation] = []
    with evaluations(evals):
        start = time.perf_counter()
        relearn(model, d.evaluator(task, formatter), examples, steps=r.steps, batch_size=r.batch_size,
                learning_rate=r.learning_rate, eval_every=r.eval_every, metrics=sorted(d.metrics), seed=d.seed,
                reference=None)
        total = time.perf_counter() - start
    inside = sum(e.seconds for e in evals)
    return Row("relearn", "", total, f"measured; {len(evals)} evaluations {inside:.1f} s "
               f"(median {median([e.seconds for e in evals]):.1f}), training and copy {total - inside:.1f} s",
               {"evaluations_s": [e.seconds for e in evals], "total_s": total})


def full_quantize(model, formatter, task, d: Defaults) -> Row:
    schemes = d.attacks.quantize.schemes
    evals: list[Evaluation] = []
    reloads: list[Call] = []
    with evaluations(evals), recorded(quantize_module, "quantize_model", reloads):
        start = time.perf_counter()
        quantize_attack(model, d.evaluator(task, formatter), schemes=schemes, reference=None)
        total = time.perf_counter() - start
    parts = [f"full eval {evals[0].seconds:.1f} s"]
    parts += [f"{s}: reload {c.seconds:.1f} + eval {e.seconds:.1f} s" for s, c, e in zip(schemes, reloads, evals[1:])]
    return Row("quantize", "", total, "measured; " + "; ".join(parts),
               {"evaluations_s": [e.seconds for e in evals], "reloads_s": [c.seconds for c in reloads],
                "total_s": total})


def _suffix_examples(task, d: Defaults):
    s = d.attacks.suffix
    return pick_examples(task.forget, min(s.examples, len(task.forget)), seed=d.seed)


def full_suffix(model, formatter, task, d: Defaults) -> Row:
    s = d.attacks.suffix
    start = time.perf_counter()
    found = optimize_suffix(model, formatter, _suffix_examples(task, d), suffix_length=s.suffix_length,
                            steps=s.steps, top_k=s.top_k, candidates=s.candidates, batch_size=d.eval.batch_size,
                            seed=d.seed)
    search = time.perf_counter() - start
    start = time.perf_counter()
    evaluator = d.evaluator(task, formatter)
    evaluate_with_suffix(model, evaluator, found.suffix_ids, reference=None)
    with_suffix = time.perf_counter() - start
    start = time.perf_counter()
    evaluate_paraphrased(model, evaluator)
    paraphrased = time.perf_counter() - start
    total = search + with_suffix + paraphrased
    return Row("suffix", "", total, f"measured; search {search:.1f} s (once per attack run), evaluation with suffix "
               f"{with_suffix:.1f} s + paraphrased {paraphrased:.1f} s (per model)",
               {"search_s": search, "with_suffix_s": with_suffix, "paraphrased_s": paraphrased, "total_s": total})


def _latent_call(model, formatter, task, d: Defaults, epsilons, steps):
    lc = d.attacks.latent
    layer = lc.layer if lc.layer is not None else model.config.num_hidden_layers // 2
    return latent_probe(model, formatter, task.eval_forget, layer, epsilons=epsilons, steps=steps,
                        batch_size=d.eval.batch_size, scope=lc.scope, relative=lc.relative)


def full_latent(model, formatter, task, d: Defaults) -> Row:
    lc = d.attacks.latent
    start = time.perf_counter()
    _latent_call(model, formatter, task, d, lc.epsilons, lc.steps)
    total = time.perf_counter() - start
    return Row("latent", "", total, "measured", {"total_s": total})


# ------------------------------------------------------------------------------------------------ per-step mode

def _full_eval_seconds(measured: list[Evaluation], full_task: Task, metrics) -> tuple[float, list[float]]:
    """Median over ``measured`` of each one scaled to the full task's plan (and the single values)."""
    pairs, questions = plan_counts(full_task, metrics)
    each = [e.scaled_to(pairs, questions) for e in measured]
    return median(each), each


def step_relearn(model, formatter, task, d: Defaults, repeats: int, n: int) -> Row:
    r = d.attacks.relearn
    examples = pick_examples(task.forget, min(r.examples, len(task.forget)), seed=d.seed)
    short = 1 + repeats  # a warm-up step, then the timed ones
    evals: list[Evaluation] = []
    trains: list[Call] = []

    def with_step_marks(call: Call, kwargs: dict) -> dict:
        callback = kwargs["on_step"]
        call.marks["steps"] = []  # (entry, exit) of the loop's on_step after each optimizer step

        def on_step(step, candidate, log):
            entry = time.perf_counter()
            try:
                return callback(step, candidate, log)
            finally:
                call.marks["steps"].append((entry, time.perf_counter()))
        return {**kwargs, "on_step": on_step}

    with evaluations(evals), recorded(relearn_module, "train", trains, with_step_marks):
        start = time.perf_counter()
        relearn(model, d.evaluator(first_examples(task, n), formatter), examples, steps=short,
                batch_size=r.batch_size, learning_rate=r.learning_rate, eval_every=short, metrics=sorted(d.metrics),
                seed=d.seed, reference=None)
        total = time.perf_counter() - start
    marks = trains[0].marks["steps"]
    step_times = [entry - previous_exit for (_, previous_exit), (entry, _) in zip(marks, marks[1:])]
    unit = median(step_times)
    eval_unit, eval_each = _full_eval_seconds(evals, task, d.metrics)
    count = len(evaluation_steps(r.steps, r.eval_every))
    rest = total - sum(e.seconds for e in evals) - short * unit  # model copy, loop set-up, warm-up excess, final save
    extrapolated = rest + r.steps * unit + count * eval_unit
    how = (f"{EXTRAPOLATED}: {r.steps} x {unit:.3g} s/step (median of {len(step_times)}, {spread(step_times)}) + "
           f"{count} x {eval_unit:.1f} s/evaluation (from {len(evals)} on the first {n} examples, "
           f"{median([e.seconds for e in evals]):.1f} s each) + {rest:.1f} s copy/set-up/save")
    return Row("relearn", "", extrapolated, how, {"step_s": step_times, "evaluation_full_s": eval_each,
                                                 "evaluation_measured_s": [e.seconds for e in evals],
                                                 "other_s": rest, "short_run_s": total})


def step_quantize(model, formatter, task, d: Defaults, repeats: int, n: int) -> Row:
    schemes = d.attacks.quantize.schemes
    evals: list[Evaluation] = []
    reloads: list[Call] = []
    with evaluations(evals), recorded(quantize_module, "quantize_model", reloads):
        start = time.perf_counter()
        quantize_attack(model, d.evaluator(first_examples(task, n), formatter), schemes=schemes, reference=None)
        total = time.perf_counter() - start
    pairs, questions = plan_counts(task, d.metrics)
    full = [e.scaled_to(pairs, questions) for e in evals]
    rest = total - sum(e.seconds for e in evals) - sum(c.seconds for c in reloads)
    extrapolated = sum(full) + sum(c.seconds for c in reloads) + rest
    parts = [f"full-precision evaluation {full[0]:.1f} s"]
    parts += [f"{s}: reload {c.seconds:.1f} s + evaluation {f:.1f} s ({e.seconds:.1f} s on the first {n})"
              for s, c, e, f in zip(schemes, reloads, evals[1:], full[1:])]
    return Row("quantize", "", extrapolated, f"{EXTRAPOLATED} (one of each): " + "; ".join(parts),
               {"evaluation_full_s": full, "evaluation_measured_s": [e.seconds for e in evals],
                "reloads_s": [c.seconds for c in reloads], "short_run_s": total})


def step_suffix(model, formatter, task, d: Defaults, repeats: int, n: int) -> Row:
    s = d.attacks.suffix
    short = 1 + repeats
    gradients: list[Call] = []
    with recorded(suffix_module, "_suffix_gradient", gradients):
        start = time.perf_counter()
        found = optimize_suffix(model, formatter, _suffix_examples(task, d), suffix_length=s.suffix_length,
                                steps=short, top_k=s.top_k, candidates=s.candidates, batch_size=d.eval.batch_size,
                                seed=d.seed)
        end = time.perf_counter()
    starts = [g.start for g in gradients] + [end]
    step_times = [b - a for a, b in zip(starts, starts[1:])][1:]  # one GCG step = gradient to next gradient
    unit = median(step_times)
    setup = gradients[0].start - start  # allowed tokens, the loss without and with the initial suffix
    search = setup + s.steps * unit
    sub = d.evaluator(first_examples(task, n), formatter)
    with_suffix: list[Evaluation] = []
    with evaluations(with_suffix):
        evaluate_with_suffix(model, sub, found.suffix_ids, reference=None)
        evaluate_paraphrased(model, sub)
    eval_suffix = with_suffix[0].scaled_to(*plan_counts(task, SUFFIX_METRICS))
    eval_para = with_suffix[1].scaled_to(*plan_counts(paraphrased_task(task), PARAPHRASE_METRICS))
    how = (f"{EXTRAPOLATED}: search {setup:.1f} s set-up + {s.steps} x {unit:.3g} s/GCG step (median of "
           f"{len(step_times)}, {spread(step_times)}) = {search:.1f} s (once per attack run); evaluation with suffix "
           f"{eval_suffix:.1f} s + paraphrased {eval_para:.1f} s (per model; {with_suffix[0].seconds:.1f} + "
           f"{with_suffix[1].seconds:.1f} s on the first {n})")
    return Row("suffix", "", search + eval_suffix + eval_para, how,
               {"step_s": step_times, "setup_s": setup, "search_s": search, "with_suffix_s": eval_suffix,
                "paraphrased_s": eval_para, "evaluation_measured_s": [e.seconds for e in with_suffix]})


def step_latent(model, formatter, task, d: Defaults, repeats: int, n: int) -> Row:
    lc = d.attacks.latent
    epsilons = sorted(set(lc.epsilons))
    positive = [e for e in epsilons if e > 0]
    scans: list[Call] = []
    objectives: list[Call] = []
    with recorded(latent_module, "_residual_scan", scans), \
            recorded(latent_module._Objective, "__call__", objectives):
        start = time.perf_counter()
        _latent_call(model, formatter, task, d, [0.0, positive[0]] if positive else [0.0], repeats)
        total = time.perf_counter() - start
    grad = [c.seconds for c in objectives if c.kwargs.get("with_grad")]
    plain = [c.seconds for c in objectives if not c.kwargs.get("with_grad")]
    scan = scans[0].seconds
    rest = total - scan - sum(grad) - sum(plain)
    n_grad, n_plain = len(positive) * lc.steps, 1 + len(positive)
    extrapolated = scan + n_grad * median(grad) + n_plain * median(plain) + rest
    how = (f"{EXTRAPOLATED}: residual norm {scan:.1f} s + {n_grad} x {median(grad):.3g} s/PGD step (median of "
           f"{len(grad)}, {spread(grad)}) + {n_plain} x {median(plain):.3g} s/loss without gradient (median of "
           f"{len(plain)}) + {rest:.1f} s other")
    return Row("latent", "", extrapolated, how, {"pgd_step_s": grad, "no_grad_s": plain, "residual_norm_s": scan,
                                                "other_s": rest, "short_run_s": total})


FULL = {"relearn": full_relearn, "quantize": full_quantize, "suffix": full_suffix, "latent": full_latent}
PER_STEP = {"relearn": step_relearn, "quantize": step_quantize, "suffix": step_suffix, "latent": step_latent}


# ------------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    # bitsandbytes logs one warning per int8 matmul on a float32 model (inputs cast to float16): said once here
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    load_before = os.getloadavg()
    threads = set_threads(args.threads)
    d = Defaults()
    task = load_task(args)
    started = time.perf_counter()
    model, tokenizer = load_model(args.model, task, args.seed)
    model.eval()
    loading = time.perf_counter() - started
    formatter = QAFormatter(tokenizer, max_length=d.model.max_length, template=d.model.template)
    print(f"model: {describe_model(args.model, model)}, loaded in {loading:.1f} s")
    print(f"task: {task.name} (forget {len(task.forget)}, eval_forget {len(task.eval_forget)}, eval_retain "
          f"{len(task.eval_retain)}, real_authors {len(task.real_authors)}, world_facts {len(task.world_facts)}); "
          f"threads: torch.set_num_threads({args.threads}) -> torch.get_num_threads() = {threads}")
    if "quantize" in args.attacks:
        print("bitsandbytes warnings silenced: int8 layers cast float32 inputs to float16 at every matmul")
    print(f"mode: {args.mode}; metrics {sorted(d.metrics)}; evaluation batch {d.eval.batch_size}, "
          f"max_new_tokens {d.eval.max_new_tokens}" + (f"; per-step: {args.repeats} timed steps, evaluations on "
                                                       f"the first {args.eval_examples} examples of each split"
                                                       if args.mode == "per-step" else ""))
    rows: list[Row] = []
    for attack in args.attacks:
        start = time.perf_counter()
        try:
            if args.mode == "full":
                row = FULL[attack](model, formatter, task, d)
            else:
                row = PER_STEP[attack](model, formatter, task, d, args.repeats, args.eval_examples)
        except UnlearnkitError as error:
            row = Row(attack, "", None, f"cannot run: {error}")
        row.budget = budget_text(attack, d, model, task)
        row.detail["wall_s"] = time.perf_counter() - start
        rows.append(row)
        print(f"  {attack}: done in {row.detail['wall_s']:.1f} s; {row.how}", flush=True)  # kept if a later one dies

    print()
    label = "measured s" if args.mode == "full" else "extrapolated s"
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min): {'/'.join(f'{x:.1f}' for x in load_before)} at the start, "
          f"{'/'.join(f'{x:.1f}' for x in load_after)} at the end")
    print(table(["attack", "model", "default budget", label], [
        [row.attack, args.model, row.budget, "-" if row.seconds is None else f"{row.seconds:.1f}"] for row in rows]))
    print()
    for row in rows:
        print(f"{row.attack}: {row.how}")
    print("\nper model: `unlearnkit attack` runs each attack on the unlearned, target and retain models, and "
          "relearning once more as its control (the suffix search once), so its wall time is about 3-4x these.")
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "model": describe_model(args.model, model),
              "task": task.name, "threads": threads, "mode": args.mode, "repeats": args.repeats,
              "eval_examples": args.eval_examples, "load_s": loading,
              "load_average_start": load_before, "load_average_end": load_after,
              "rows": [{"attack": r.attack, "budget": r.budget, "seconds": r.seconds, "how": r.how, **r.detail}
                       for r in rows]}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
