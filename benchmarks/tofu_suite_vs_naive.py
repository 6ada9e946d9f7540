"""The whole TOFU suite (``evaluate_tofu``) against a per-metric evaluator that runs its own forward passes.

The per-metric ("naive") evaluator is written here, the way OpenUnlearning's evaluator works
(locuslab/open-unlearning ``src/evals/metrics/memorization.py``, ``mia/min_k.py``, ``utils.py``
``run_batchwise_evals`` / ``eval_text_similarity``, ``configs/eval/tofu_metrics/*.yaml``): every metric batches its
own (question, answer) pairs or questions and runs the model for them, and nothing is shared across metrics:

=========================  ============================================================================
metric                     forward passes of its own
=========================  ============================================================================
<split>_Q_A_Prob           (q, answer)                              forget, retain
<split>_Truth_Ratio        (q, paraphrased_answer) + every (q, perturbed_j)   forget, retain
<split>_Q_A_Prob_norm.     (q, answer) + every (q, perturbed_j)     real authors, world facts
<split>_Truth_Ratio        (q, answer) + every (q, perturbed_j)     real authors, world facts
<split>_Q_A_ROUGE          greedy generation of the split's questions (each split generates its own)
extraction_strength        (q, answer) of the forget split
exact_memorization         (q, answer) of the forget split
mia_loss, mia_zlib,        (q, answer) of the forget split and of the holdout, each statistic its own run
mia_min_k, mia_min_k++,    (Min-K%++ also computes the next-token moments over the vocabulary)
mia_reference
model_utility, forget_quality, privleak: from the numbers above (no model)
=========================  ============================================================================

The metric set is the suite's default one (``suite.DEFAULT_METRICS``: every TOFU metric and every membership
statistic but the opt-in gradient norm). Batching (``--naive-batching``): ``dataset`` (the default) is
OpenUnlearning's: each metric's pairs / questions in dataset order, in batches padded to their longest row;
``sorted`` gives the per-metric evaluator length-sorted batches (each metric's pairs sorted longest first, as the
suite sorts all of them; questions by prompt length, while the suite also groups them by gold answer length), so
that the teacher-forced passes differ by the sharing only. Everything else is the same on both
sides: the batch size (the most rows run at once), right padding for teacher forcing and left padding for greedy
generation with the same stop tokens, and the numerics (per row, float32 ``log_softmax`` of the answer positions'
logits, turned into Python floats; sums with ``math.fsum``). The per-metric evaluator generates with
``model.generate`` batch by batch, as OpenUnlearning does; the suite decodes with continuous batching
(:mod:`unlearnkit.evaluation.scoring.greedy`) and only after the gold-answer tokens its scoring pass showed the model
writing (``--no-gold-prefix`` turns that off). Pairs are not de-duplicated within a metric (OpenUnlearning does not). OpenUnlearning's evaluator also keeps a cache by
metric *name* (a pre-computed metric of the same name is computed once), which would share the real-authors /
world-facts answer and perturbed passes between Q_A_Prob_normalised and Truth_Ratio; the script prints how many
rows that variant would run, and times the variant without any sharing.

The naive metric formulas are written out here from the reference (not imported from unlearnkit), so the
equality check also cross-checks ``tofu_metrics`` / ``mia``. Library calls are the same as the reference's:
``rouge_score`` ROUGE-L recall with stemming, ``sklearn.metrics.roc_auc_score``, ``scipy.stats.ks_2samp`` and
``scipy.stats.hmean``.

Exactness: the suite scores the answers to one question on its prompt's KV cache, and runs the tokens several
answers start with once (:mod:`unlearnkit.evaluation.scoring.prompt_sharing`); the per-metric evaluator runs every
(prompt + answer) sequence whole. The two are the same computation in exact arithmetic, but the matrix products have other shapes, and the
CPU's BLAS rounds some small shapes differently, so a few log-probs differ in their last float32 bits and an
aggregate by ~1e-8; with ``--no-share-prompts`` the suite runs whole sequences too and, under the default
``--attention eager`` (which makes a row's logits independent of its batch; PyTorch's SDPA kernel on the CPU blocks
by the padded width), the aggregates are bit for bit equal. The aggregates must agree to ``--tolerance`` (default
1e-6; the script exits with status 1 otherwise). Both evaluators run with the same attention.

Intervals: the suite is timed *with* its 95% bootstrap confidence intervals (``aggregate_intervals`` on its
result, B = 1000, as ``pipeline.with_intervals`` adds them to every evaluated model), the per-metric evaluator
without any (OpenUnlearning reports none); the intervals' time and share of the suite's time are printed
separately. ``--no-intervals`` times the suite without them.

The forget_quality, privleak and mia_reference need the retain model's numbers; a fixed made-up reference is
passed to both evaluators (log-normal truth ratios and per-example losses from seed 0, AUC 0.5), which exercises
the same code as a real one.

Examples::

    python benchmarks/tofu_suite_vs_naive.py --threads 1
    python benchmarks/tofu_suite_vs_naive.py --threads 1 --train-epochs 4
    python benchmarks/tofu_suite_vs_naive.py --threads 1 --train-epochs 4 --no-intervals
    python benchmarks/tofu_suite_vs_naive.py --threads 1 --tofu ../shared/data/tofu --split forget01 --max-examples 40
"""

from __future__ import annotations

import argparse
import json
import math
import zlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rouge_score import rouge_scorer  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from measurement import table  # noqa: E402
from subjects import add_subject_options, describe_model, load_model, load_task, positive_int, set_threads  # noqa: E402
from tofu_scoring import time_inside_suite  # noqa: E402
from unlearnkit.data.formatting import QAFormatter, collate  # noqa: E402
from unlearnkit.data.types import QAExample, Task  # noqa: E402
from unlearnkit.evaluation.metrics.intervals import aggregate_intervals  # noqa: E402
from unlearnkit.evaluation.suites import tofu as suite# noqa: E402

EPS = 1e-10  # the reference's guard in the truth ratio, its forget aggregator and the normalised probability
MIN_K = 0.4  # OpenUnlearning's mia_min_k.yaml for TOFU
MIN_VARIANCE = 1e-6  # Min-K%++'s clamp of the variance (``mia/min_k_plus_plus.py``)
# the metrics compared: the suite's default set (every TOFU metric and membership statistic but gradnorm)
METRICS = tuple(suite.DEFAULT_METRICS)
MIA_NAIVE = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "mia_reference")
NINE = ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE",
        "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_subject_options(parser, default_model="tiny")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="batch size of both evaluators")
    parser.add_argument("--max-new-tokens", type=positive_int, default=200, help="greedy generation bound (TOFU: 200)")
    parser.add_argument("--repeats", type=positive_int, default=1,
                        help="timed runs of each evaluator, interleaved, after one untimed run of each")
    parser.add_argument("--attention", choices=("eager", "sdpa"), default="eager",
                        help="attention implementation of the model for both evaluators (eager: exact equality)")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="largest allowed |suite - naive| of an aggregate")
    parser.add_argument("--no-share-prompts", dest="share_prompts", action="store_false",
                        help="the suite scores whole sequences instead of answers on their prompt's KV cache")
    parser.add_argument("--naive-batching", choices=("dataset", "sorted"), default="dataset",
                        help="per-metric evaluator's batches: dataset order (OpenUnlearning) or length-sorted (as the "
                             "suite)")
    parser.add_argument("--no-gold-prefix", dest="gold_prefix", action="store_false",
                        help="the suite decodes every answer from its prompt instead of after the gold answer's "
                             "tokens its scoring pass showed the model writing")
    parser.add_argument("--train-epochs", type=int, default=0,
                        help="first fine-tune the model for this many epochs (0: as loaded)")
    parser.add_argument("--train-on", choices=("full", "evaluated", "retain"), default="full",
                        help="fine-tune on task.full, on the evaluated forget and retain examples only (a target "
                             "model's knowledge of them at a size the CPU can train), or on the evaluated retain "
                             "examples only (a retain model: what unlearning aims at, knows nothing of the forget set)")
    parser.add_argument("--train-lr", type=float, default=1e-3, help="AdamW learning rate of the fine-tuning")
    parser.add_argument("--no-intervals", dest="intervals", action="store_false",
                        help="time the suite without its bootstrap confidence intervals (aggregate_intervals)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


# --- the model runs of the naive evaluator -------------------------------------------------------------------------


@dataclass
class Row:
    """One answer's teacher-forced scores: per-token log-probs (EOS included), argmax matches, ends with EOS, and
    (when asked for) each position's next-token mean and variance of log p (Min-K%++)."""

    logprobs: list[float]
    matches: list[bool]
    ends_with_eos: bool
    mu: list[float] | None = None
    variance: list[float] | None = None

    def mean_nll(self) -> float:
        return -math.fsum(self.logprobs) / len(self.logprobs)

    def before_eos(self) -> tuple[list[float], list[bool]]:
        """Without the final EOS prediction (OpenUnlearning's ``tokenwise_logprobs`` drops the last label)."""
        return (self.logprobs[:-1], self.matches[:-1]) if self.ends_with_eos else (self.logprobs, self.matches)


@dataclass
class NaiveRunner:
    """Runs the model for one metric's pairs or questions at a time; counts rows and times the two kinds of run."""

    model: object
    formatter: QAFormatter
    batch_size: int
    max_new_tokens: int
    sort: bool = False
    rows_scored: int = 0
    questions_generated: int = 0
    seconds: dict = field(default_factory=lambda: {"teacher_forced": 0.0, "generation": 0.0})

    def score(self, pairs: list[tuple[str, str]], moments: bool = False) -> list[Row]:
        """Teacher-forced scores of ``pairs`` (in order), in right-padded batches (dataset order, or sorted longest
        first); ``moments``: also Min-K%++'s μ = Σ p log p and σ² = Σ p (log p)² − μ², as the reference writes them."""
        start = time.perf_counter()
        encoded = [self.formatter.encode(q, a) for q, a in pairs]
        order = list(range(len(pairs)))
        if self.sort:
            order.sort(key=lambda i: len(encoded[i].input_ids), reverse=True)
        rows: list[Row | None] = [None] * len(pairs)
        eos = self.formatter.eos_token_id
        with torch.inference_mode():
            for at in range(0, len(order), self.batch_size):
                chunk = order[at : at + self.batch_size]
                batch = collate([encoded[i] for i in chunk], self.formatter.pad_token_id, "right")
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                for row, i in enumerate(chunk):
                    enc = encoded[i]
                    begin, end = enc.prompt_length, len(enc.input_ids)
                    step = logits[row, begin - 1 : end - 1].float()
                    targets = torch.tensor(enc.input_ids[begin:end])
                    all_logprobs = torch.log_softmax(step, dim=-1)
                    logprobs = all_logprobs.gather(-1, targets[:, None]).squeeze(-1)
                    rows[i] = Row(logprobs.double().tolist(), (step.argmax(-1) == targets).tolist(),
                                  enc.input_ids[-1] == eos)
                    if moments:
                        probs = all_logprobs.exp()
                        mu = (probs * all_logprobs).sum(-1)
                        rows[i].mu = mu.double().tolist()
                        rows[i].variance = ((probs * all_logprobs.square()).sum(-1) - mu.square()).double().tolist()
        self.rows_scored += len(pairs)
        self.seconds["teacher_forced"] += time.perf_counter() - start
        return rows  # type: ignore[return-value]

    def generate(self, questions: list[str]) -> list[str]:
        """Greedy answers (in order), in left-padded batches (dataset order, or sorted by prompt length)."""
        start = time.perf_counter()
        prompts = [self.formatter.prompt_ids(q) for q in questions]
        order = list(range(len(questions)))
        if self.sort:
            order.sort(key=lambda i: len(prompts[i]), reverse=True)
        stop = [self.formatter.eos_token_id]
        config_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for token in [config_eos] if isinstance(config_eos, int) else (config_eos or []):
            if int(token) not in stop:
                stop.append(int(token))
        answers: list[str | None] = [None] * len(questions)
        with torch.inference_mode():
            for at in range(0, len(order), self.batch_size):
                chunk = order[at : at + self.batch_size]
                width = max(len(prompts[i]) for i in chunk)
                ids = torch.full((len(chunk), width), self.formatter.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                    mask[row, width - len(prompts[i]):] = 1
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                          do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
                                          eos_token_id=stop, pad_token_id=self.formatter.pad_token_id)
                for row, i in enumerate(chunk):
                    new = out[row, width:].tolist()
                    cut = next((t for t, token in enumerate(new) if token in stop), len(new))
                    answers[i] = self.formatter.tokenizer.decode(
                        new[:cut], skip_special_tokens=True, clean_up_tokenization_spaces=True).strip()
        self.questions_generated += len(questions)
        self.seconds["generation"] += time.perf_counter() - start
        return answers  # type: ignore[return-value]


# --- the naive metrics, each with its own model runs --------------------------------------------------------------


def mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def perturbed_rows(run: NaiveRunner, examples: list[QAExample]) -> list[list[Row]]:
    """Every (question, perturbed_j) of every example in one batched run, regrouped per example."""
    flat = run.score([(ex.question, w) for ex in examples for w in ex.perturbed_answers])
    grouped, at = [], 0
    for ex in examples:
        grouped.append(flat[at : at + len(ex.perturbed_answers)])
        at += len(ex.perturbed_answers)
    return grouped


def q_a_prob(run: NaiveRunner, examples: list[QAExample]) -> float:
    """mean over examples of P(a|q) = exp(−mean token NLL) (``probability``, ``evaluate_probability``)."""
    return mean([math.exp(-row.mean_nll()) for row in run.score([(ex.question, ex.answer) for ex in examples])])


def q_a_prob_normalised(run: NaiveRunner, examples: list[QAExample]) -> float:
    """mean of P(a|q) / (P(a|q) + Σ_j P(w_j|q) + 1e-10) (``probability_w_options``)."""
    correct = run.score([(ex.question, ex.answer) for ex in examples])
    wrong = perturbed_rows(run, examples)
    values = [math.exp(-c.mean_nll()) / (math.exp(-c.mean_nll()) + math.fsum(math.exp(-w.mean_nll()) for w in ws) + EPS)
              for c, ws in zip(correct, wrong) if ws]
    return mean(values)


def truth_ratios(run: NaiveRunner, examples: list[QAExample], correct_field: str) -> list[float]:
    """R = exp(−mean_j ℓ̄(w_j)) / (exp(−ℓ̄(correct)) + 1e-10) per usable example (``truth_ratio``)."""
    usable = [ex for ex in examples if getattr(ex, correct_field) is not None and ex.perturbed_answers]
    correct = run.score([(ex.question, getattr(ex, correct_field)) for ex in usable])
    wrong = perturbed_rows(run, usable)
    return [math.exp(-(math.fsum(w.mean_nll() for w in ws) / len(ws))) / (math.exp(-c.mean_nll()) + EPS)
            for c, ws in zip(correct, wrong)]


def truth_ratio_aggregate(ratios: list[float], forget: bool) -> float | None:
    """forget: mean of min(R, 1/(R + 1e-10)) (``closer_to_1_better``); others: mean of max(0, 1 − R) (``true_better``)."""
    if not ratios:
        return None
    r = np.asarray(ratios, dtype=np.float64)
    return float(np.mean(np.minimum(r, 1 / (r + EPS)))) if forget else float(np.mean(np.maximum(0.0, 1 - r)))


def rouge_recall(run: NaiveRunner, examples: list[QAExample]) -> float:
    """mean ROUGE-L recall (stemmer on) of the greedy answer against the answer (``rouge``, ``eval_text_similarity``)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    generated = run.generate([ex.question for ex in examples])
    return mean([scorer.score(ex.answer, g)["rougeL"].recall for ex, g in zip(examples, generated)])


def exact_memorization(run: NaiveRunner, examples: list[QAExample]) -> float:
    """mean over examples of the fraction of answer tokens (no EOS) whose argmax is the label (``exact_memorization``)."""
    values = []
    for row in run.score([(ex.question, ex.answer) for ex in examples]):
        matches = row.before_eos()[1]
        if matches:
            values.append(sum(matches) / len(matches))
    return mean(values)


def extraction_strength(run: NaiveRunner, examples: list[QAExample]) -> float:
    """mean of 1 − k/T, k the first position whose whole suffix is argmax-matched, searched as the reference's loop."""
    values = []
    for row in run.score([(ex.question, ex.answer) for ex in examples]):
        matches = row.before_eos()[1]
        if not matches:
            values.append(0.0)
            continue
        for k in range(len(matches)):  # ``extraction_strength`` in memorization.py: stops at k = T − 1 at the latest
            if all(matches[k:]):
                break
        values.append(1 - k / len(matches))
    return mean(values)


def min_k_scores(run: NaiveRunner, examples: list[QAExample]) -> list[float]:
    """−mean of the lowest max(1, ⌊0.4·T⌋) token log-probs before the EOS (``mia/min_k.py``)."""
    scores = []
    for row in run.score([(ex.question, ex.answer) for ex in examples]):
        logprobs = row.before_eos()[0]
        count = max(1, int(len(logprobs) * MIN_K))
        scores.append(float(-np.mean(np.sort(np.asarray(logprobs, dtype=np.float64))[:count])) if logprobs else 0.0)
    return scores


def auc(forget: list[float], holdout: list[float]) -> float:
    """ROC AUC with forget = 0, holdout = 1 on loss-like scores (OpenUnlearning's orientation)."""
    labels = [0] * len(forget) + [1] * len(holdout)
    return float(roc_auc_score(labels, np.asarray(forget + holdout, dtype=np.float64)))


def losses(run: NaiveRunner, examples: list[QAExample]) -> list[float]:
    """Mean answer NLL, EOS included (``mia/loss.py``, ``evaluate_probability``'s avg_loss)."""
    return [row.mean_nll() for row in run.score([(ex.question, ex.answer) for ex in examples])]


def zlib_scores(run: NaiveRunner, examples: list[QAExample]) -> list[float]:
    """Mean answer NLL / len(zlib.compress(answer as UTF-8)) (``mia/zlib.py``)."""
    rows = run.score([(ex.question, ex.answer) for ex in examples])
    return [row.mean_nll() / len(zlib.compress(ex.answer.encode("utf-8"))) for ex, row in zip(examples, rows)]


def min_k_plus_plus_scores(run: NaiveRunner, examples: list[QAExample]) -> list[float]:
    """−mean of the lowest max(1, ⌊0.4·T⌋) z_t = (log p_t − μ_t) / sqrt(max(σ²_t, 1e-6)), EOS prediction dropped
    (``mia/min_k_plus_plus.py``)."""
    scores = []
    for row in run.score([(ex.question, ex.answer) for ex in examples], moments=True):
        keep = len(row.before_eos()[0])
        if keep == 0:
            scores.append(0.0)
            continue
        z = [(lp - mu) / math.sqrt(max(var, MIN_VARIANCE))
             for lp, mu, var in zip(row.logprobs[:keep], row.mu[:keep], row.variance[:keep])]
        count = max(1, int(keep * MIN_K))
        scores.append(float(-np.mean(np.sort(np.asarray(z, dtype=np.float64))[:count])))
    return scores


def naive_evaluate(run: NaiveRunner, task: Task, reference: dict) -> dict[str, float | None]:
    """Every TOFU aggregate, each metric with its own model runs (the splits of the synthetic/TOFU task are non-empty)."""
    out: dict[str, float | None] = {}
    forget_ratios: list[float] = []
    for prefix, field_name, correct_field, normalised in (
        ("forget", "eval_forget", "paraphrased_answer", False), ("retain", "eval_retain", "paraphrased_answer", False),
        ("ra", "real_authors", "answer", True), ("wf", "world_facts", "answer", True),
    ):
        examples = getattr(task, field_name)
        if normalised:
            out[f"{prefix}_Q_A_Prob_normalised"] = q_a_prob_normalised(run, examples)
        else:
            out[f"{prefix}_Q_A_Prob"] = q_a_prob(run, examples)
        out[f"{prefix}_Q_A_ROUGE"] = rouge_recall(run, examples)
        ratios = truth_ratios(run, examples, correct_field)
        out[f"{prefix}_Truth_Ratio"] = truth_ratio_aggregate(ratios, forget=prefix == "forget")
        if prefix == "forget":
            forget_ratios = ratios
    out["extraction_strength"] = extraction_strength(run, task.eval_forget)
    out["exact_memorization"] = exact_memorization(run, task.eval_forget)
    forget, holdout = task.eval_forget, task.holdout
    out["mia_loss"] = auc(losses(run, forget), losses(run, holdout))
    out["mia_zlib"] = auc(zlib_scores(run, forget), zlib_scores(run, holdout))
    out["mia_min_k"] = auc(min_k_scores(run, forget), min_k_scores(run, holdout))
    out["mia_min_k_plus_plus"] = auc(min_k_plus_plus_scores(run, forget), min_k_plus_plus_scores(run, holdout))
    out["mia_reference"] = auc([a - b for a, b in zip(losses(run, forget), reference["mia_loss_forget"])],
                               [a - b for a, b in zip(losses(run, holdout), reference["mia_loss_holdout"])])
    p = float(stats.ks_2samp(np.asarray(forget_ratios), np.asarray(reference["forget_truth_ratios"])).pvalue)
    out["forget_quality"] = p
    out["forget_quality_log10"] = math.log10(p) if p > 0 else float("-inf")
    out["model_utility"] = float(stats.hmean(np.asarray([out[name] for name in NINE], dtype=np.float64)))
    auc_prime, reference_prime = 1 - out["mia_min_k"], 1 - reference["mia_min_k_auc"]
    out["privleak"] = (auc_prime - reference_prime) / (reference_prime + EPS) * 100
    return out


def naive_row_counts(task: Task) -> dict[str, int]:
    """Teacher-forced rows of the naive evaluator, and of the same with OpenUnlearning's cache by metric name."""
    def n_pert(examples):
        return sum(len(ex.perturbed_answers) for ex in examples)

    def n_truth(examples, correct_field):
        usable = [ex for ex in examples if getattr(ex, correct_field) is not None and ex.perturbed_answers]
        return len(usable) + n_pert(usable)

    f, r, ra, wf = task.eval_forget, task.eval_retain, task.real_authors, task.world_facts
    prob_and_truth = len(f) + n_truth(f, "paraphrased_answer") + len(r) + n_truth(r, "paraphrased_answer")
    # ES and EM score the forget answers; each of the five membership statistics the forget and holdout answers
    memorization_and_mia = 2 * len(f) + len(MIA_NAIVE) * (len(f) + len(task.holdout))
    normalised_and_truth_ra_wf = sum(len(s) + n_pert(s) + n_truth(s, "answer") for s in (ra, wf))
    # with the name cache, ra/wf Truth_Ratio reuses Q_A_Prob_normalised's {ra,wf}_Q_A_Prob and _PERT_Prob passes
    return {"naive": prob_and_truth + memorization_and_mia + normalised_and_truth_ra_wf,
            "name_cache": prob_and_truth + memorization_and_mia + sum(len(s) + n_pert(s) for s in (ra, wf))}


# --- set-up, timing, comparison ----------------------------------------------------------------------------------


def fine_tune(model, formatter: QAFormatter, examples: list[QAExample], epochs: int, batch_size: int, seed: int,
              lr: float) -> float:
    """A few epochs of plain NLL fine-tuning on ``examples`` (AdamW), so that the model knows their answers."""
    encoded = [formatter.encode(ex.question, ex.answer) for ex in examples]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    loss = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(encoded), generator=generator).tolist()
        for at in range(0, len(order), batch_size):
            batch = collate([encoded[i] for i in order[at : at + batch_size]], formatter.pad_token_id, "right")
            step_loss = model(**batch).loss
            optimizer.zero_grad()
            step_loss.backward()
            optimizer.step()
            loss = float(step_loss.detach())
    model.eval()
    return loss


def made_up_reference(task: Task) -> dict:
    """A fixed stand-in for the retain model's statistics (to exercise forget_quality, privleak, mia_reference)."""
    rng = np.random.default_rng(0)
    ratios = rng.lognormal(0.0, 0.5, size=max(1, len(task.eval_forget)))
    return {"forget_truth_ratios": ratios.tolist(), "mia_min_k_auc": 0.5,
            "mia_loss_forget": rng.uniform(1.0, 3.0, size=len(task.eval_forget)).tolist(),
            "mia_loss_holdout": rng.uniform(1.0, 3.0, size=len(task.holdout)).tolist()}


def compare(suite_aggregates: dict, naive_aggregates: dict) -> tuple[float, list[str]]:
    """Max |suite − naive| over the aggregates (inf where only one is None or they differ in kind) and the names."""
    worst, names = 0.0, sorted(set(suite_aggregates) | set(naive_aggregates))
    for name in names:
        a, b = suite_aggregates.get(name), naive_aggregates.get(name)
        if a is None or b is None:
            diff = 0.0 if a is None and b is None else math.inf
        elif math.isinf(a) or math.isinf(b):
            diff = 0.0 if a == b else math.inf
        else:
            diff = abs(a - b)
        worst = max(worst, diff)
    return worst, names


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    task = load_task(args)
    model, tokenizer = load_model(args.model, task, args.seed)
    model.set_attn_implementation(args.attention)
    formatter = QAFormatter(tokenizer)
    train_loss = None
    if args.train_epochs > 0:
        start = time.perf_counter()
        train = {"full": task.full, "evaluated": [*task.eval_forget, *task.eval_retain],
                 "retain": task.eval_retain}[args.train_on]
        train_loss = fine_tune(model, formatter, train, args.train_epochs, args.batch_size, args.seed, args.train_lr)
        print(f"fine-tuned {args.train_epochs} epochs on {len(train)} pairs ({args.train_on}, lr {args.train_lr:g}) "
              f"in {time.perf_counter() - start:.1f} s, last batch loss {train_loss:.3f}")
    model.eval()
    reference = made_up_reference(task)

    def run_suite():
        with time_inside_suite(("score_pairs", "generate_answers")) as spent:
            start = time.perf_counter()
            result = suite.evaluate_tofu(model, formatter, task, reference=reference, batch_size=args.batch_size,
                                         max_new_tokens=args.max_new_tokens, metrics=set(METRICS),
                                         progress=False, share_prompts=args.share_prompts,
                                         gold_prefix=args.gold_prefix)
            evaluated = time.perf_counter()
            if args.intervals:  # as pipeline.with_intervals: B = 1000, 95%, seed 0
                result.intervals = aggregate_intervals(result.aggregates, result.per_example, reference)
            total = time.perf_counter() - start
        return result.aggregates, {"total": total, "teacher_forced": spent["score_pairs"],
                                   "generation": spent["generate_answers"], "intervals": total - (evaluated - start)}

    def run_naive():
        runner = NaiveRunner(model, formatter, args.batch_size, args.max_new_tokens,
                             sort=args.naive_batching == "sorted")
        start = time.perf_counter()
        aggregates = naive_evaluate(runner, task, reference)
        total = time.perf_counter() - start
        return aggregates, {"total": total, **runner.seconds, "intervals": 0.0}, runner

    suite_aggregates, _ = run_suite()  # untimed: warm-up, and the values compared
    naive_aggregates, _, runner = run_naive()
    worst, names = compare(suite_aggregates, naive_aggregates)
    suite_times, naive_times = [], []
    for _ in range(args.repeats):
        suite_times.append(run_suite()[1])
        naive_times.append(run_naive()[1])

    plan = suite.plan_tofu(task, METRICS)
    counts = naive_row_counts(task)
    assert counts["naive"] == runner.rows_scored, (counts, runner.rows_scored)
    print(f"model: {describe_model(args.model, model)}, attention {model.config._attn_implementation}")
    print(f"task: {task.name}; naive batching: {args.naive_batching}; suite shares prompts: {args.share_prompts}; "
          f"suite decodes after the gold prefix: {args.gold_prefix}; "
          f"threads: torch.set_num_threads({args.threads}) "
          f"-> {threads}; batch size "
          f"{args.batch_size}; max_new_tokens {args.max_new_tokens}")
    print(f"teacher-forced rows: suite {len(dict.fromkeys(plan.pairs))} distinct (of {len(plan.pairs)} planned); "
          f"naive {counts['naive']}; naive with OpenUnlearning's metric-name cache {counts['name_cache']}")
    print(f"questions generated: suite {len(dict.fromkeys(plan.questions))}; naive {runner.questions_generated}")
    print()
    print(table(["metric", "suite", "naive", "|difference|"], [
        [name, f"{suite_aggregates.get(name)!r:.14}", f"{naive_aggregates.get(name)!r:.14}",
         "-" if suite_aggregates.get(name) is None else f"{abs(suite_aggregates[name] - naive_aggregates[name]):.1e}"]
        for name in names
    ]))
    print(f"\nmax |suite - naive| over {len(names)} aggregates = {worst:.3e} (tolerance {args.tolerance:g})")

    def med(runs, part):
        return float(np.median([r[part] for r in runs]))

    parts = ("total", "teacher_forced", "generation", "intervals")
    print()
    print(table(["part (median s)", "suite", "naive", "naive/suite"], [
        [part, f"{med(suite_times, part):.3f}", f"{med(naive_times, part):.3f}",
         f"{med(naive_times, part) / med(suite_times, part):.2f}" if med(naive_times, part) > 0 else "-"]
        for part in parts
    ]))
    ratio = med(naive_times, "total") / med(suite_times, "total")
    intervals_share = float(np.median([r["intervals"] / r["total"] for r in suite_times]))
    print(f"\nsuite intervals: {'on' if args.intervals else 'off'}; median {med(suite_times, 'intervals'):.3f} s, "
          f"{100 * intervals_share:.1f}% of the suite's time (the per-metric evaluator computes none)")
    print(f"time ratio naive/suite = {ratio:.2f} (whole evaluation"
          f"{', the suite with its intervals' if args.intervals else ''}), "
          f"{med(naive_times, 'teacher_forced') / med(suite_times, 'teacher_forced'):.2f} (teacher-forced passes)")

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "model": describe_model(args.model, model),
        "attention": args.attention, "naive_batching": args.naive_batching,
        "share_prompts": args.share_prompts, "gold_prefix": args.gold_prefix, "intervals": args.intervals,
        "intervals_share": intervals_share, "task": task.name, "threads": threads,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "train_epochs": args.train_epochs, "train_on": args.train_on,
        "train_lr": args.train_lr, "train_loss": train_loss,
        "rows": {"suite": len(dict.fromkeys(plan.pairs)), **counts},
        "questions": {"suite": len(dict.fromkeys(plan.questions)), "naive": runner.questions_generated},
        "suite_aggregates": suite_aggregates, "naive_aggregates": naive_aggregates, "max_abs_difference": worst,
        "suite_s": suite_times, "naive_s": naive_times, "ratio_naive_over_suite": ratio,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if not worst <= args.tolerance:
        print(f"FAILED: the evaluators differ by {worst:.3e} > {args.tolerance:g}", file=sys.stderr)
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
