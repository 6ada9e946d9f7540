"""Run the robustness attacks on a finished run: does the forgotten knowledge come back?

For each attack, the unlearned model is attacked beside the target and the retain model (the honest baseline: what
the retain model also "relearns" that fast is not evidence of leftover memory), and the results go into the run's
``results.json`` under ``robustness`` and into its ``report.html``.

Each model's relearning and quantization outcome is kept in the result store beside its evaluations
(:mod:`unlearnkit.attacks.cache`; ``reuse: false`` turns it off): runs unlearned from the same target and retain
models attack those two once.

- relearn: fine-tune on k forget examples; curves of the forget metrics and the recovered fraction
  (after − before) / (target − before) per model; with ``control``, the unlearned model is also fine-tuned on k
  retain examples.
- quantize: reload at each scheme (bitsandbytes) and re-evaluate the forget metrics together with utility.
- suffix: a universal adversarial suffix optimised GCG-style on the unlearned (or the target) model over k forget
  questions, then the forget metrics of every model with the suffix; also TOFU's paraphrased questions.
- latent: the strongest ‖δ‖ ≤ ε shift of one layer's residual stream toward the forget answers, per ε; the
  likelihood it recovers, also as a fraction of what unlearning removed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from unlearnkit.attacks.cache import cached_attack
from unlearnkit.attacks.latent import latent_probe
from unlearnkit.attacks.quantize import QuantizedEvaluation, quantize_attack
from unlearnkit.attacks.relearn import RelearnResult, pick_examples, relearn, relearn_report
from unlearnkit.attacks.suffix import evaluate_paraphrased, evaluate_with_suffix, optimize_suffix
from unlearnkit.config import AttacksConfig
from unlearnkit.data.corpus import CorpusTask
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.sources import load_task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.evaluation.suites.result import EvalResult
from unlearnkit.evaluation.suites.tofu import resolve_metrics
from unlearnkit.finished_run import load_run
from unlearnkit.models.load import load_causal_lm
from unlearnkit.models.prepare import resolve_models
from unlearnkit.models.unlearned import load_unlearned
from unlearnkit.report.html import write_report
from unlearnkit.runio import write_json

log = logging.getLogger("unlearnkit")


def encode_quantized(outcome: dict[str, QuantizedEvaluation]) -> dict:
    return {scheme: {**asdict(q), "result": q.result.to_dict()} for scheme, q in outcome.items()}


def decode_quantized(data: dict) -> dict[str, QuantizedEvaluation]:
    return {scheme: QuantizedEvaluation(**{**q, "result": EvalResult(**q["result"])}) for scheme, q in data.items()}


def run_attacks(run_dir: Path, attacks: AttacksConfig, progress: bool = True) -> dict:
    """Attack the run's unlearned model (and its target and retain models); update results.json and report.html."""
    cfg, results = load_run(run_dir)
    resolve_metrics(set(attacks.metrics))  # unknown metric names fail before any work
    task = load_task(cfg.task.source, **cfg.task.options)
    if isinstance(task, CorpusTask):
        raise UnlearnkitError(f"{run_dir} unlearned a raw-text task ({cfg.task.source!r}); the attacks read QA "
                              "answers and run on QA tasks (tofu, synthetic, custom) only")
    models = resolve_models(cfg, task, progress, log=log.info)  # the run's own target/retain models, from the cache
    # the weights, with an inference-time method's transform (GUARD-IT's steering) installed
    unlearned, tokenizer = load_unlearned(run_dir, trust_remote_code=cfg.model.trust_remote_code)
    formatter = QAFormatter(tokenizer, max_length=cfg.model.max_length, template=cfg.model.template)
    # the attacks' evaluator: the run's evaluation settings and the attacks' metrics (each attack evaluates without
    # the result store and without intervals: attacks/evaluation.py)
    evaluator = Evaluator(task, formatter, cfg.eval, metrics=attacks.metrics, store=False, progress=progress)
    reference = None
    if models.retain is not None:  # the retain model's whole saved result (every metric), from the cache when kept
        reference = Evaluator(task, formatter, cfg.eval, progress=progress).evaluate_saved(
            models.retain, trust_remote_code=cfg.model.trust_remote_code, intervals=False).reference_stats()
    subjects = {"unlearned": unlearned, "target": load_causal_lm(models.target)[0]}
    if models.retain is not None:
        subjects["retain"] = load_causal_lm(models.retain)[0]

    robustness: dict = {}
    if "relearn" in attacks.run:
        r = attacks.relearn
        examples = pick_examples(task.forget, min(r.examples, len(task.forget)), seed=cfg.seed)

        def attack(model, data):
            def compute():
                return relearn(model, evaluator, data, steps=r.steps, batch_size=r.batch_size,
                               learning_rate=r.learning_rate, eval_every=r.eval_every,
                               metrics=sorted(set(attacks.metrics)), seed=cfg.seed, reference=reference,
                               progress=progress, curve_generation=r.curve_generation)

            if not attacks.reuse:
                return compute()
            settings = {**r.model_dump(exclude={"control"}), "metrics": sorted(set(attacks.metrics)),
                        "seed": cfg.seed, "examples": [[e.question, e.answer] for e in data]}
            return cached_attack(evaluator, model, "relearn", settings, reference, compute, asdict,
                                 lambda d: RelearnResult(**d))

        runs = {}
        for who, model in subjects.items():
            log.info("relearning attack on the %s model (%d forget examples, %d steps)", who, len(examples), r.steps)
            runs[who] = attack(model, examples)
        report = relearn_report(runs["unlearned"], runs["target"], runs.get("retain"))
        if r.control:
            control = pick_examples(task.retain, min(r.examples, len(task.retain)), seed=cfg.seed)
            log.info("relearning control: the unlearned model fine-tuned on %d retain examples", len(control))
            report["control"] = relearn_report(attack(unlearned, control), runs["target"])
        report["settings"] = r.model_dump()
        robustness["relearn"] = report
    if "quantize" in attacks.run:
        quantized = {}
        for who, model in subjects.items():
            log.info("quantization attack on the %s model (%s)", who, ", ".join(attacks.quantize.schemes))
            def compute(model=model):
                return quantize_attack(model, evaluator, schemes=attacks.quantize.schemes, reference=reference,
                                       progress=progress, kernel=attacks.quantize.kernel)

            if attacks.reuse:
                settings = {**attacks.quantize.model_dump(), "metrics": sorted(set(attacks.metrics))}
                outcome = cached_attack(evaluator, model, "quantize", settings, reference, compute,
                                        encode_quantized, decode_quantized)
            else:
                outcome = compute()
            quantized[who] = {scheme: {"description": q.description, "kernel": q.kernel,
                                       "aggregates": q.result.aggregates} for scheme, q in outcome.items()}
        robustness["quantize"] = quantized

    if "suffix" in attacks.run:
        sc = attacks.suffix
        examples = pick_examples(task.forget, min(sc.examples, len(task.forget)), seed=cfg.seed)
        log.info("GCG suffix attack: optimising on the %s model over %d forget questions", sc.optimize_on, len(examples))
        found = optimize_suffix(subjects[sc.optimize_on], formatter, examples, suffix_length=sc.suffix_length,
                                steps=sc.steps, top_k=sc.top_k, candidates=sc.candidates,
                                batch_size=cfg.eval.batch_size, seed=cfg.seed, progress=progress)
        evaluated = {}
        for who, model in subjects.items():
            with_suffix = evaluate_with_suffix(model, evaluator, found.suffix_ids, reference=reference)
            paraphrased = evaluate_paraphrased(model, evaluator)
            evaluated[who] = {"with_suffix": with_suffix.aggregates, "paraphrased": paraphrased.aggregates}
        robustness["suffix"] = {"optimised_on": sc.optimize_on, "search": found.to_dict(), "models": evaluated,
                                "settings": sc.model_dump()}
    if "latent" in attacks.run:
        settings_latent = attacks.latent
        layer = settings_latent.layer
        if layer is None:
            layer = unlearned.config.num_hidden_layers // 2
        target_prob = results["models"]["target"]["aggregates"].get("forget_Q_A_Prob")
        probes = {}
        for who, model in subjects.items():
            log.info("latent perturbation probe on the %s model (layer %d)", who, layer)
            probe = latent_probe(model, formatter, task.eval_forget, layer, epsilons=settings_latent.epsilons,
                                 steps=settings_latent.steps, batch_size=cfg.eval.batch_size,
                                 scope=settings_latent.scope, relative=settings_latent.relative)
            probes[who] = probe.to_dict(target_prob=target_prob if who != "target" else None)
        robustness["latent"] = probes

    results["robustness"] = robustness
    write_json(Path(run_dir) / "results.json", results)
    write_report(Path(run_dir) / "report.html", results, cfg)
    return robustness
