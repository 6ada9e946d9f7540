"""OpenUnlearning's further TOFU metrics (metrics/tofu_table_extra.py) against values worked out independently.

Definitions: locuslab/open-unlearning ``configs/eval/tofu_metrics/{forget,retain}_Q_A_{PARA,PERT}_{Prob,ROUGE}.yaml``
(``probability`` / ``rouge`` handlers of ``src/evals/metrics/memorization.py``, several answers per question averaged
by ``aggregate_to_1D``), ``retain_extraction_strength.yaml`` and ``forget_Q_A_gibberish.yaml`` (``classification_prob``
in ``src/evals/metrics/utility.py``). The naive side runs the model one example at a time (helpers of
test_tofu_suite.py) and scores ROUGE with ``rouge_score`` directly.
"""

import math

import numpy as np
import pytest
import test_tofu_suite
import torch
from rouge_score import rouge_scorer
from test_tofu_suite import (
    FORGET,
    MAX_NEW_TOKENS,
    RETAIN,
    TOL,
    naive_generate,
    naive_prob,
    naive_scores,
)
from transformers import BertConfig, BertForSequenceClassification

from unlearnkit.config import parse_config
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.evaluation.metrics import fluency
from unlearnkit.evaluation.metrics import tofu as tofu_metrics
from unlearnkit.evaluation.scoring.passes import PairScore
from unlearnkit.evaluation.suites.tofu import DEFAULT_METRICS, evaluate_tofu, plan_tofu

setup = test_tofu_suite.setup  # the trained tiny model of test_tofu_suite.py, a fixture here too
EXTRA = [f"{split}_Q_A_{kind}_{what}" for split in ("forget", "retain") for kind in ("PARA", "PERT")
         for what in ("Prob", "ROUGE")] + ["retain_extraction_strength"]


def score(logprobs):
    return PairScore(list(logprobs), [False] * len(logprobs), True)


def test_mean_answer_probability_and_rouge_by_hand():
    # P = exp(mean log p): 0.5 and 0.25 → per example 0.375; a second example 0.1; one without answers is None
    value = tofu_metrics.mean_answer_probability([[score([math.log(0.5)] * 2), score([math.log(0.25)])],
                                                  [score([math.log(0.1)] * 3)], []])
    assert value.per_example[:2] == [pytest.approx(0.375), pytest.approx(0.1)] and value.per_example[2] is None
    assert value.aggregate == pytest.approx(0.2375)
    # ROUGE-L recall = LCS / reference length: "the cat sat" vs generation "the cat ran": 2/3; vs "a dog": 0
    rouge = tofu_metrics.mean_rouge_l_recall(["the cat ran", "x"], [["the cat sat", "a dog"], []])
    assert rouge.per_example == [pytest.approx(1 / 3), None] and rouge.aggregate == pytest.approx(1 / 3)


def test_the_extra_metrics_equal_the_naive_computation(setup):
    model, formatter, task = setup
    result = evaluate_tofu(model, formatter, task, metrics=set(EXTRA), batch_size=4, max_new_tokens=MAX_NEW_TOKENS,
                           progress=False)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for prefix, examples in (("forget", FORGET), ("retain", RETAIN)):
        generated = [naive_generate(model, formatter, ex.question) for ex in examples]
        expected = {
            "Q_A_PARA_Prob": [naive_prob(model, formatter, ex.question, ex.paraphrased_answer) for ex in examples],
            "Q_A_PERT_Prob": [np.mean([naive_prob(model, formatter, ex.question, w) for w in ex.perturbed_answers])
                              for ex in examples],
            "Q_A_PARA_ROUGE": [scorer.score(ex.paraphrased_answer, g)["rougeL"].recall
                               for ex, g in zip(examples, generated)],
            "Q_A_PERT_ROUGE": [np.mean([scorer.score(w, g)["rougeL"].recall for w in ex.perturbed_answers])
                               for ex, g in zip(examples, generated)],
        }
        for name, values in expected.items():
            assert result.per_example[f"{prefix}_{name}"] == pytest.approx(values, abs=TOL), name
            assert result.aggregates[f"{prefix}_{name}"] == pytest.approx(np.mean(values), abs=TOL), name
    strengths = []
    for ex in RETAIN:
        matches = naive_scores(model, formatter, ex.question, ex.answer)[2][:-1]  # without the EOS prediction
        k = next((k for k in range(len(matches)) if all(matches[k:])), len(matches) - 1)
        strengths.append(1 - k / len(matches))
    assert result.per_example["retain_extraction_strength"] == pytest.approx(strengths)
    assert len(set(result.per_example["forget_Q_A_PERT_Prob"])) > 1  # not a constant


def test_they_add_no_pair_and_no_question_to_the_default_pass(setup):
    _, _, task = setup
    before = [m for m in DEFAULT_METRICS if m not in EXTRA]
    old, new = plan_tofu(task, before), plan_tofu(task, [*DEFAULT_METRICS, *EXTRA])
    assert set(new.pairs) == set(old.pairs) and set(new.questions) == set(old.questions)
    # the probabilities and retain ES are computed by default; the ROUGE ones (CPU time) and gibberish are opt-in
    assert {m for m in EXTRA if "ROUGE" not in m} <= set(DEFAULT_METRICS)
    assert not {m for m in EXTRA if "ROUGE" in m} & set(DEFAULT_METRICS)
    assert "forget_Q_A_gibberish" not in DEFAULT_METRICS


@pytest.fixture
def classifier(setup):
    _, formatter, _ = setup
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(formatter.tokenizer), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, num_labels=2,
                        pad_token_id=formatter.tokenizer.pad_token_id)
    return formatter.tokenizer, BertForSequenceClassification(config).eval()


def naive_clean_probability(tokenizer, classifier, text):
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(classifier(**ids).logits[0], -1)[0].item()


def test_gibberish_is_the_classifiers_clean_probability_of_each_forget_answer(setup, classifier, monkeypatch):
    model, formatter, task = setup
    tokenizer, net = classifier
    texts = ["She was born in Oslo.", "orchard orchard", "Mira Solen wrote The Glass Orchard in 1998 and more."]
    batched = fluency.class_probabilities(texts, tokenizer, net, batch_size=2)
    assert batched == pytest.approx([naive_clean_probability(tokenizer, net, t) for t in texts], abs=1e-5)
    monkeypatch.setattr(fluency, "cached_classifier", lambda name=None: "cached")
    monkeypatch.setattr(fluency, "load_classifier", lambda name=None, device="cpu": classifier)
    result = evaluate_tofu(model, formatter, task, metrics={"forget_Q_A_gibberish"},
                           max_new_tokens=MAX_NEW_TOKENS, progress=False)
    expected = [naive_clean_probability(tokenizer, net, naive_generate(model, formatter, ex.question))
                for ex in FORGET]
    assert result.per_example["forget_Q_A_gibberish"] == pytest.approx(expected, abs=1e-5)
    assert result.aggregates["forget_Q_A_gibberish"] == pytest.approx(np.mean(expected), abs=1e-5)


def test_gibberish_without_its_classifier_is_refused_before_the_model_runs(setup, monkeypatch):
    _, formatter, task = setup
    monkeypatch.setattr(fluency, "GIBBERISH_CLASSIFIER", "unlearnkit-tests/no-such-classifier")

    class Untouchable(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise AssertionError("the model ran")

    with pytest.raises(UnlearnkitError, match="no-such-classifier.*huggingface-cli download"):
        evaluate_tofu(Untouchable(), formatter, task, metrics={"forget_Q_A_gibberish"}, progress=False)


def test_eval_extra_metrics_adds_opt_in_metrics_to_the_default_set(setup, tmp_path):
    _, formatter, task = setup
    config = parse_config({"eval": {"extra_metrics": ["forget_Q_A_PERT_ROUGE", "retain_Q_A_PARA_ROUGE"]}}).eval
    evaluator = Evaluator(task, formatter, config, cache_dir=tmp_path)
    assert evaluator.metrics == set(DEFAULT_METRICS) | {"forget_Q_A_PERT_ROUGE", "retain_Q_A_PARA_ROUGE"}
    assert Evaluator(task, formatter, config, metrics=["forget_Q_A_Prob"], cache_dir=tmp_path).metrics == {
        "forget_Q_A_Prob"}  # an explicit list (the monitor's, the attacks') is taken as it is
    with pytest.raises(UnlearnkitError, match="eval.extra_metrics: unknown TOFU metric"):
        parse_config({"eval": {"extra_metrics": ["forget_Q_A_PARA_ROUG"]}})
