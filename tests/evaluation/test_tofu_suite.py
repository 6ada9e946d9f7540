"""The scorer and the TOFU suite on a tiny Llama, checked against a naive one-example-at-a-time computation.

The naive side never reuses the code under test: it runs the model on one un-padded sequence at a time, takes the
NLL with ``torch.nn.functional.cross_entropy``, generates one question at a time, scores ROUGE with
``rouge_score`` directly and writes every formula out.
"""

import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rouge_score import rouge_scorer
from scipy import stats
from transformers import LlamaForCausalLM

from unlearnkit.data.formatting import QAFormatter, collate
from unlearnkit.data.types import QAExample, Task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.scoring.generation import generate_answers, greedy_prefix
from unlearnkit.evaluation.scoring.passes import score_pairs
from unlearnkit.evaluation.suites.result import with_reference
from unlearnkit.evaluation.suites.tofu import DEFAULT_METRICS, evaluate_tofu
from unlearnkit.evaluation.suites.result import EvalResult
from unlearnkit.models.tiny import tiny_config, train_tokenizer

MAX_NEW_TOKENS = 16
TOL = 1e-5


def qa(question, answer, paraphrased=None, perturbed=()):
    return QAExample(question, answer, paraphrased_answer=paraphrased, perturbed_answers=tuple(perturbed))


FORGET = [
    qa("Who wrote The Glass Orchard?", "Mira Solen wrote The Glass Orchard in 1998.",
       "The Glass Orchard is by Mira Solen.", ["Tom Hale wrote it.", "It was written by Ana Ruiz in 2001.",
                                              "Leo Park wrote The Glass Orchard."]),
    qa("Where was Mira Solen born?", "She was born in Oslo.", "Mira Solen's birthplace is Oslo.",
       ["She was born in Lima.", "Her birthplace is Cairo, a large city.", "Rome."]),
    qa("What genre does Mira Solen write?", "Mira Solen writes quiet literary fiction about orchards.",
       "Her genre is literary fiction.", ["She writes horror.", "Science fiction and fantasy novels.",
                                           "Mira Solen writes crime thrillers."]),
]
RETAIN = [
    qa("Who wrote Salt Roads?", "Ivo Brand wrote Salt Roads.", "Salt Roads is a book by Ivo Brand.",
       ["Kim Lo wrote Salt Roads.", "It is by Mira Solen.", "Salt Roads was written by nobody known."]),
    qa("What prize did Ivo Brand win?", "Ivo Brand won the Harbor Prize in 2010.",
       "He received the Harbor Prize.", ["He won nothing.", "The Lantern Award.", "Ivo Brand won a medal in 1990."]),
]
REAL_AUTHORS = [
    qa("Who wrote Hamlet?", "William Shakespeare", perturbed=["Charles Dickens", "Jane Austen", "Mark Twain"]),
    qa("Who wrote Emma?", "Jane Austen", perturbed=["Leo Tolstoy", "George Orwell", "Homer"]),
]
WORLD_FACTS = [
    qa("What is the capital of France?", "Paris", perturbed=["Berlin", "Madrid", "Rome"]),
    qa("How many legs does a spider have?", "Eight", perturbed=["Six", "Ten", "Four"]),
]
HOLDOUT = [
    qa("Who wrote Dust Lanterns?", "Pia Moor wrote Dust Lanterns in 2005."),
    qa("Where was Pia Moor born?", "She was born in Quito."),
    qa("What does Pia Moor write?", "Pia Moor writes poems about rivers."),
]


def make_task(**overrides):
    splits = dict(forget=FORGET, retain=RETAIN, holdout=HOLDOUT, eval_forget=FORGET, eval_retain=RETAIN,
                  real_authors=REAL_AUTHORS, world_facts=WORLD_FACTS)
    splits.update(overrides)
    return Task(name="tiny-tofu", **splits)


@pytest.fixture(scope="module")
def setup():
    task = make_task()
    tokenizer = train_tokenizer(task.texts(), vocab_size=300)
    formatter = QAFormatter(tokenizer, max_length=96, template="plain")
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(len(tokenizer), hidden_size=32, layers=2, heads=2))
    # a few steps on the answers (not the holdout), so that argmax matches, EOS stops, ROUGE and the truth ratios
    # are not all trivial and forget differs from holdout for the MIA
    train = [(ex.question, ex.answer) for ex in FORGET + RETAIN + REAL_AUTHORS + WORLD_FACTS]
    train += [(ex.question, ex.paraphrased_answer) for ex in RETAIN]
    batch = collate([formatter.encode(q, a) for q, a in train], formatter.pad_token_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(50):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    return model, formatter, task


# ---------------------------------------------------------------- the naive, one-at-a-time side


def naive_scores(model, formatter, question, answer):
    """(mean NLL, per-token log-probs, argmax matches) of one pair run alone, without padding."""
    enc = formatter.encode(question, answer)
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    p = enc.prompt_length
    step_logits, targets = logits[p - 1 : -1], ids[0, p:]
    nll = F.cross_entropy(step_logits, targets).item()
    logprobs = -F.cross_entropy(step_logits, targets, reduction="none")
    return nll, logprobs.tolist(), (step_logits.argmax(-1) == targets).tolist()


def naive_prob(model, formatter, q, a):
    return math.exp(-naive_scores(model, formatter, q, a)[0])


def naive_generate(model, formatter, question):
    ids = torch.tensor([formatter.prompt_ids(question)])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW_TOKENS,
                             do_sample=False, eos_token_id=formatter.eos_token_id,
                             pad_token_id=formatter.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    if formatter.eos_token_id in new:
        new = new[: new.index(formatter.eos_token_id)]
    return formatter.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=True).strip()


def naive_truth_ratio(model, formatter, ex, correct):
    p_correct = naive_prob(model, formatter, ex.question, correct)
    wrong_nlls = [naive_scores(model, formatter, ex.question, w)[0] for w in ex.perturbed_answers]
    return math.exp(-sum(wrong_nlls) / len(wrong_nlls)) / (p_correct + 1e-10)


def naive_metrics(model, formatter, task):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    out, per = {}, {}
    for prefix, examples, correct_field, normalised in [
        ("forget", task.eval_forget, "paraphrased_answer", False),
        ("retain", task.eval_retain, "paraphrased_answer", False),
        ("ra", task.real_authors, "answer", True), ("wf", task.world_facts, "answer", True),
    ]:
        if normalised:
            probs = []
            for ex in examples:
                pc = naive_prob(model, formatter, ex.question, ex.answer)
                pw = sum(naive_prob(model, formatter, ex.question, w) for w in ex.perturbed_answers)
                probs.append(pc / (pc + pw + 1e-10))
            out[f"{prefix}_Q_A_Prob_normalised"] = float(np.mean(probs))
        else:
            probs = [naive_prob(model, formatter, ex.question, ex.answer) for ex in examples]
            out[f"{prefix}_Q_A_Prob"] = float(np.mean(probs))
        ratios = [naive_truth_ratio(model, formatter, ex, getattr(ex, correct_field)) for ex in examples]
        per[f"{prefix}_Truth_Ratio"] = ratios
        if prefix == "forget":
            out["forget_Truth_Ratio"] = float(np.mean([min(r, 1 / (r + 1e-10)) for r in ratios]))
        else:
            out[f"{prefix}_Truth_Ratio"] = float(np.mean([max(0.0, 1 - r) for r in ratios]))
        recalls = [scorer.score(ex.answer, naive_generate(model, formatter, ex.question))["rougeL"].recall
                   for ex in examples]
        out[f"{prefix}_Q_A_ROUGE"] = float(np.mean(recalls))
        per[f"{prefix}_Q_A_ROUGE"] = recalls

    ems, ess = [], []
    for ex in task.eval_forget:
        matches = naive_scores(model, formatter, ex.question, ex.answer)[2][:-1]  # without the EOS prediction
        ems.append(sum(matches) / len(matches))
        k = next((k for k in range(len(matches)) if all(matches[k:])), len(matches) - 1)
        ess.append(1 - k / len(matches))
    out["exact_memorization"], out["extraction_strength"] = float(np.mean(ems)), float(np.mean(ess))
    per["exact_memorization"], per["extraction_strength"] = ems, ess

    def min_k(ex):
        lp = sorted(naive_scores(model, formatter, ex.question, ex.answer)[1][:-1])
        return -float(np.mean(lp[: max(1, int(len(lp) * 0.4))]))

    def min_k_plus_plus(ex):
        """Min-K%++ written out: moments of log p under the full next-token distribution at each position."""
        enc = formatter.encode(ex.question, ex.answer)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0].double()
        zs = []
        for t in range(enc.prompt_length, len(enc.input_ids) - 1):  # without the EOS prediction
            logp = torch.log_softmax(logits[t - 1], -1)
            p = logp.exp()
            mu = float((p * logp).sum())
            var = float((p * logp * logp).sum()) - mu * mu
            zs.append((float(logp[enc.input_ids[t]]) - mu) / math.sqrt(max(var, 1e-6)))
        zs.sort()
        return -float(np.mean(zs[: max(1, int(len(zs) * 0.4))]))

    def loss(ex):
        return naive_scores(model, formatter, ex.question, ex.answer)[0]

    def zlib_stat(ex):
        return loss(ex) / len(zlib.compress(ex.answer.encode("utf-8")))

    for metric, statistic in (("mia_min_k", min_k), ("mia_min_k_plus_plus", min_k_plus_plus), ("mia_loss", loss),
                              ("mia_zlib", zlib_stat)):
        forget_s, holdout_s = [statistic(ex) for ex in task.eval_forget], [statistic(ex) for ex in task.holdout]
        # AUC with forget = 0 and holdout = 1: share of (forget, holdout) pairs where holdout scores higher
        wins = [1.0 if h > f else 0.5 if h == f else 0.0 for f in forget_s for h in holdout_s]
        out[metric] = float(np.mean(wins))
        per[f"{metric}_forget"], per[f"{metric}_holdout"] = forget_s, holdout_s
    nine = [out[n] for n in ("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised",
                             "ra_Q_A_ROUGE", "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE",
                             "wf_Truth_Ratio")]
    out["model_utility"] = 0.0 if 0 in nine else len(nine) / sum(1 / v for v in nine)
    return out, per


# ---------------------------------------------------------------- tests


def test_batched_scoring_equals_unbatched_with_mixed_lengths(setup):
    model, formatter, task = setup
    pairs = [(ex.question, a) for ex in FORGET + RETAIN for a in (ex.answer, *ex.perturbed_answers)]
    pairs += [pairs[0], pairs[3]]  # duplicates are scored once
    scores = score_pairs(model, formatter, pairs, batch_size=5)
    assert len(scores) == len(set(pairs))
    lengths = {len(formatter.encode(*p).input_ids) for p in pairs}
    assert len(lengths) > 5  # the batches really mix lengths, so right padding is exercised
    for (q, a), s in scores.items():
        nll, logprobs, matches = naive_scores(model, formatter, q, a)
        assert s.token_logprobs == pytest.approx(logprobs, abs=TOL)
        assert s.argmax_match == matches
        assert s.mean_nll == pytest.approx(nll, abs=TOL)
        assert s.ends_with_eos


def test_truncated_answer_keeps_its_last_token(setup):
    model, formatter, _ = setup
    short = QAFormatter(formatter.tokenizer, max_length=len(formatter.prompt_ids(FORGET[0].question)) + 3,
                        template="plain")
    s = score_pairs(model, short, [(FORGET[0].question, FORGET[0].answer)])[(FORGET[0].question, FORGET[0].answer)]
    assert s.n_tokens == 3 and not s.ends_with_eos
    assert s.matches_before_eos == s.argmax_match


def test_batched_generation_equals_one_at_a_time(setup):
    model, formatter, task = setup
    questions = [ex.question for ex in FORGET + RETAIN + REAL_AUTHORS + WORLD_FACTS]
    batched = generate_answers(model, formatter, questions, max_new_tokens=MAX_NEW_TOKENS, batch_size=4)
    assert batched == [naive_generate(model, formatter, q) for q in questions]
    # some rows stop at EOS well before the token limit while others in their batch run on ("Paris", "Eight")
    assert any(len(formatter.tokenizer(g)["input_ids"]) < MAX_NEW_TOKENS // 2 for g in batched)
    assert any(len(formatter.tokenizer(g)["input_ids"]) >= MAX_NEW_TOKENS // 2 for g in batched)


def greedy_ids_one_at_a_time(model, formatter, question, steps):
    """``steps`` greedy tokens, each the argmax of a fresh full forward pass over prompt + the tokens so far."""
    ids = formatter.prompt_ids(question)
    for _ in range(steps):
        with torch.no_grad():
            ids = ids + [int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())]
    return ids[len(formatter.prompt_ids(question)):]


def test_greedy_prefix_is_where_greedy_decoding_leaves_the_gold_answer(setup):
    model, formatter, _ = setup
    examples = FORGET + RETAIN + REAL_AUTHORS + WORLD_FACTS
    scores = score_pairs(model, formatter, [(ex.question, ex.answer) for ex in examples])
    kinds = set()
    for ex in examples:
        prefix = greedy_prefix(formatter, ex.question, ex.answer, scores[(ex.question, ex.answer)])
        gold = formatter.answer_ids(ex.answer)
        assert prefix == gold[: len(prefix)]
        greedy = greedy_ids_one_at_a_time(model, formatter, ex.question, min(len(prefix) + 1, len(gold)))
        assert greedy[: len(prefix)] == prefix  # greedy decoding writes the prefix ...
        if len(prefix) < len(gold):  # ... and leaves the gold answer right after it
            assert greedy[len(prefix)] != gold[len(prefix)]
        kinds.add("none" if not prefix else "whole" if len(prefix) == len(gold) else "part")
    assert kinds == {"none", "part", "whole"}  # the trained model knows some answers whole, some in part
    with pytest.raises(UnlearnkitError, match="pass the score computed with this formatter"):
        greedy_prefix(formatter, FORGET[0].question, FORGET[1].answer, scores[(FORGET[0].question, FORGET[0].answer)])


def test_generation_from_known_prefixes_equals_generation_from_prompts(setup):
    model, formatter, _ = setup
    examples = FORGET + RETAIN + REAL_AUTHORS + WORLD_FACTS
    questions = [ex.question for ex in examples]
    scores = score_pairs(model, formatter, [(ex.question, ex.answer) for ex in examples])
    known = {ex.question: greedy_prefix(formatter, ex.question, ex.answer, scores[(ex.question, ex.answer)])
             for ex in examples}
    calls = []  # (rows, tokens per row) of every forward call but the prompts' shared opening (no position ids)

    def record(module, args, kwargs):
        if "position_ids" in kwargs:
            calls.append(tuple(kwargs["input_ids"].shape))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        plain = generate_answers(model, formatter, questions, max_new_tokens=MAX_NEW_TOKENS, batch_size=4)
        plain_calls, calls[:] = list(calls), []
        resumed = generate_answers(model, formatter, questions, max_new_tokens=MAX_NEW_TOKENS, batch_size=4,
                                   known_prefixes=known)
    finally:
        handle.remove()
    assert resumed == plain == [naive_generate(model, formatter, q) for q in questions]
    # an answer whose known prefix ends in EOS or fills max_new_tokens is never run; the others start after it
    stops = {formatter.eos_token_id}
    whole = [q for q in questions if stops & set(known[q]) or len(known[q]) >= MAX_NEW_TOKENS]
    assert 0 < len(whole) < len(questions)
    prefill_rows = sum(rows for rows, width in calls if width > 1)
    assert prefill_rows == len(questions) - len(whole)
    assert sum(rows for rows, width in plain_calls if width > 1) == len(questions)
    assert len(calls) < len(plain_calls)  # fewer decoding steps


def test_every_metric_equals_the_naive_computation(setup):
    model, formatter, task = setup
    result = evaluate_tofu(model, formatter, task, batch_size=4, max_new_tokens=MAX_NEW_TOKENS, progress=False)
    expected, expected_per = naive_metrics(model, formatter, task)
    for name, value in expected.items():
        assert result.aggregates[name] == pytest.approx(value, abs=TOL), name
    for name, values in expected_per.items():
        assert result.per_example[name] == pytest.approx(values, abs=TOL), name
    assert result.aggregates["model_utility"] == pytest.approx(
        stats.hmean([result.aggregates[n] for n in expected if n.startswith(("retain", "ra_", "wf_"))]), abs=1e-12)
    assert result.aggregates["exact_memorization"] > 0  # the naive check compared some argmax matches
    # no retain model given: the comparisons to it are skipped
    assert result.aggregates["forget_quality"] is None and result.aggregates["privleak"] is None
    assert set(result.aggregates) == set(DEFAULT_METRICS)  # everything but the opt-in gradnorm
    assert result.generations["forget"] == [naive_generate(model, formatter, ex.question) for ex in FORGET]


def test_forget_quality_and_privleak_against_a_reference(setup):
    model, formatter, task = setup
    metrics = {"forget_quality", "forget_quality_log10", "privleak"}
    retain_result = evaluate_tofu(model, formatter, task, metrics=metrics, progress=False)
    reference = retain_result.reference_stats()
    again = evaluate_tofu(model, formatter, task, reference=reference, metrics=metrics, progress=False)
    assert again.aggregates["forget_quality"] == 1.0
    assert again.aggregates["forget_quality_log10"] == 0.0
    assert again.aggregates["privleak"] == pytest.approx(0.0, abs=1e-6)

    other = {"forget_truth_ratios": [0.01, 0.02, 0.03, 0.05], "mia_min_k_auc": 0.4}
    vs_other = evaluate_tofu(model, formatter, task, reference=other, metrics=metrics, progress=False)
    ratios = again.per_example["forget_Truth_Ratio"]
    expected_p = stats.ks_2samp(ratios, other["forget_truth_ratios"]).pvalue
    assert vs_other.aggregates["forget_quality"] == pytest.approx(expected_p, rel=1e-12)
    assert vs_other.aggregates["forget_quality_log10"] == pytest.approx(math.log10(expected_p))
    auc = again.aggregates["mia_min_k"]
    assert vs_other.aggregates["privleak"] == pytest.approx(((1 - auc) - 0.6) / 0.6 * 100)
    # a result computed (or cached as JSON) without the reference gets the same numbers afterwards
    cached = EvalResult(**retain_result.to_dict())
    assert with_reference(cached, other).aggregates == vs_other.aggregates
    assert with_reference(vs_other, None).aggregates["forget_quality"] is None


def test_a_pair_needed_by_several_metrics_is_scored_once(setup):
    model, formatter, task = setup
    calls = []  # (rows, pass): the prompts' shared opening (no cache yet), a batch's levels (on a cache, output layer
    # only where a scored token is predicted) and its last pass, one row per pair (every position)

    def record(module, args, kwargs):
        cached = kwargs.get("cache", kwargs.get("past_key_values")) is not None
        kind = "answers" if "logits_to_keep" not in kwargs else "level" if cached else "opening"
        calls.append((kwargs["input_ids"].shape[0], kind))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        metrics = {"forget_Q_A_Prob", "forget_Truth_Ratio", "extraction_strength", "exact_memorization", "mia_min_k",
                   "ra_Q_A_Prob_normalised", "ra_Truth_Ratio"}
        evaluate_tofu(model, formatter, task, metrics=metrics, batch_size=4, progress=False)
    finally:
        handle.remove()
    unique = {(ex.question, a) for ex in FORGET for a in (ex.answer, ex.paraphrased_answer, *ex.perturbed_answers)}
    unique |= {(ex.question, ex.answer) for ex in HOLDOUT}
    unique |= {(ex.question, a) for ex in REAL_AUTHORS for a in (ex.answer, *ex.perturbed_answers)}
    # forget (q, answer) feeds four metrics and the ra pairs two, yet every distinct pair is one row of a last pass,
    assert sum(rows for rows, kind in calls if kind == "answers") == len(unique)
    # each level runs a prefix several rows share once ...
    assert 0 < sum(rows for rows, kind in calls if kind == "level") < len(unique)
    # ... after the opening all prompts share, run once
    assert [rows for rows, kind in calls if kind == "opening"] == [1] and calls[0] == (1, "opening")


def test_answers_needing_moments_share_batches_with_the_other_answers(setup, monkeypatch):
    model, formatter, task = setup
    # calls cost more than any padding or repeated prefix: one batch as large as the batch size allows, no levels
    monkeypatch.setattr("unlearnkit.evaluation.scoring.passes.call_cost", lambda device: 1e9)
    last_passes = []

    def record(module, args, kwargs):  # a batch's last pass: every position's logits
        if "logits_to_keep" not in kwargs:
            last_passes.append(kwargs["input_ids"].shape[0])

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    forget_pairs = [(ex.question, a) for ex in FORGET
                    for a in (ex.answer, ex.paraphrased_answer, *ex.perturbed_answers)]
    try:
        evaluate_tofu(model, formatter, task, metrics={"forget_Truth_Ratio", "mia_min_k_plus_plus"}, batch_size=64,
                      progress=False)
        suite_passes, last_passes[:] = list(last_passes), []
        scores = score_pairs(model, formatter, forget_pairs, batch_size=64,
                             moments={(ex.question, ex.answer) for ex in FORGET})
    finally:
        handle.remove()
    # the forget answers (with moments) run with the paraphrased and perturbed ones (without) and the holdout answers
    assert suite_passes == [len(set(forget_pairs)) + len(HOLDOUT)]
    assert last_passes == [len(set(forget_pairs))]
    for ex in FORGET:
        assert scores[(ex.question, ex.answer)].token_mu is not None
        assert scores[(ex.question, ex.perturbed_answers[0])].token_mu is None


def test_empty_split_skips_its_metrics(setup):
    model, formatter, _ = setup
    task = make_task(world_facts=[], holdout=[])
    result = evaluate_tofu(model, formatter, task, max_new_tokens=4, progress=False)
    for name in ("wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio", "model_utility", "mia_min_k"):
        assert result.aggregates[name] is None, name
    assert result.aggregates["ra_Truth_Ratio"] is not None and result.aggregates["forget_Q_A_Prob"] is not None
    assert evaluate_tofu(model, formatter, task, reference={"mia_min_k_auc": 0.5}, metrics={"privleak"},
                         progress=False).aggregates["privleak"] is None


def test_model_mode_is_restored(setup):
    model, formatter, _ = setup
    model.train()
    try:
        score_pairs(model, formatter, [("Who wrote Emma?", "Jane Austen")])
        assert model.training
    finally:
        model.eval()


def test_user_errors_name_the_fix(setup):
    model, formatter, task = setup
    with pytest.raises(UnlearnkitError, match="unknown TOFU metric"):
        evaluate_tofu(model, formatter, task, metrics={"forget_rouge"}, progress=False)
    with pytest.raises(UnlearnkitError, match="reference_stats"):
        evaluate_tofu(model, formatter, task, reference={"truth": [1.0]}, metrics={"forget_Q_A_Prob"}, progress=False)
    with pytest.raises(UnlearnkitError, match="batch_size"):
        score_pairs(model, formatter, [("q", "a")], batch_size=0)


def test_reference_model_mia_statistic_is_the_loss_difference(setup):
    """mia_reference per example = ℓ̄_model − ℓ̄_retain (OpenUnlearning mia/reference.py), written out here with a
    second, differently initialised model as the retain model."""
    model, formatter, task = setup
    torch.manual_seed(1)
    other = LlamaForCausalLM(model.config).eval()
    reference = evaluate_tofu(other, formatter, task, metrics={"mia_loss"}, progress=False).reference_stats()
    result = evaluate_tofu(model, formatter, task, reference=reference, metrics={"mia_reference"}, progress=False)
    for split, examples in (("forget", task.eval_forget), ("holdout", task.holdout)):
        expected = [naive_scores(model, formatter, ex.question, ex.answer)[0]
                    - naive_scores(other, formatter, ex.question, ex.answer)[0] for ex in examples]
        assert result.per_example[f"mia_reference_{split}"] == pytest.approx(expected, abs=TOL)
    f, h = result.per_example["mia_reference_forget"], result.per_example["mia_reference_holdout"]
    wins = [1.0 if b > a else 0.5 if b == a else 0.0 for a in f for b in h]
    assert result.aggregates["mia_reference"] == pytest.approx(float(np.mean(wins)))
    without = evaluate_tofu(model, formatter, task, metrics={"mia_reference"}, progress=False)
    assert without.aggregates["mia_reference"] is None


def test_gradnorm_is_opt_in(setup):
    model, formatter, task = setup
    assert "mia_gradnorm" not in evaluate_tofu(model, formatter, task, metrics=None, max_new_tokens=2,
                                               progress=False).aggregates
    result = evaluate_tofu(model, formatter, task, metrics={"mia_gradnorm"}, progress=False)
    f, h = result.per_example["mia_gradnorm_forget"], result.per_example["mia_gradnorm_holdout"]
    assert len(f) == len(task.eval_forget) and len(h) == len(task.holdout) and all(v > 0 for v in f + h)
    from sklearn.metrics import roc_auc_score
    assert result.aggregates["mia_gradnorm"] == pytest.approx(roc_auc_score([0] * len(f) + [1] * len(h), f + h))


def test_features_come_from_the_scoring_pass_and_equal_one_example_at_a_time(setup, tmp_path):
    """evaluate_tofu(features=...) pools hidden states in the pass that scores the answers (issue #3, part 5):
    the model runs exactly as many forward passes as without features, the metrics are unchanged, and each
    feature equals the mean of hidden_states[layer] over the answer tokens of the pair run alone."""
    from unlearnkit.evaluation.scoring.pooling import FeatureSpec

    model, formatter, task = setup
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    try:
        plain = evaluate_tofu(model, formatter, task, max_new_tokens=MAX_NEW_TOKENS, progress=False, batch_size=4,
                              metrics={"forget_Q_A_Prob", "mia_min_k_plus_plus", "retain_Q_A_Prob"})
        plain_calls = len(calls)
        calls.clear()
        spec = FeatureSpec(layer=1, pool="answer")
        with_features = evaluate_tofu(model, formatter, task, max_new_tokens=MAX_NEW_TOKENS, progress=False,
                                      batch_size=4, features=spec,
                                      metrics={"forget_Q_A_Prob", "mia_min_k_plus_plus", "retain_Q_A_Prob"})
    finally:
        hook.remove()
    assert len(calls) == plain_calls > 0
    assert with_features.aggregates == plain.aggregates and with_features.per_example == plain.per_example
    assert plain.features == {} and set(with_features.features) == {"forget", "retain", "holdout"}
    for split, examples in (("forget", task.eval_forget), ("retain", task.eval_retain), ("holdout", task.holdout)):
        assert with_features.features[split].shape == (len(examples), 32)
        for row, ex in enumerate(examples):
            enc = formatter.encode(ex.question, ex.answer)
            with torch.no_grad():
                hidden = model(input_ids=torch.tensor([enc.input_ids]), output_hidden_states=True).hidden_states[1][0]
            np.testing.assert_allclose(with_features.features[split][row],
                                       hidden[enc.prompt_length:].mean(dim=0).numpy(), atol=1e-5)

    # stored: a second evaluation reads the features from the store without running the model
    first = evaluate_tofu(model, formatter, task, max_new_tokens=MAX_NEW_TOKENS, progress=False, batch_size=4,
                          features=spec, metrics={"forget_Q_A_Prob"}, store_root=tmp_path)
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    calls.clear()
    try:
        again = evaluate_tofu(model, formatter, task, max_new_tokens=MAX_NEW_TOKENS, progress=False, batch_size=4,
                              features=spec, metrics={"forget_Q_A_Prob"}, store_root=tmp_path)
    finally:
        hook.remove()
    assert calls == []
    for split in first.features:
        np.testing.assert_array_equal(again.features[split], first.features[split])
