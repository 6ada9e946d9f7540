"""Fixtures shared by the MUSE tests: a synthetic raw-text task, a tokenizer trained on it, and ROUGE-L F1 as MUSE's
RougeEvalLogger computes it (rouge_score, no stemming) for the naive side of the comparisons."""

import pytest
from rouge_score import rouge_scorer

from unlearnkit.data.synthetic_corpus import synthetic_corpus_task
from unlearnkit.models.tiny import train_tokenizer


@pytest.fixture(scope="module")
def task():
    return synthetic_corpus_task(n_people=8, forget_people=2, holdout_people=1, n_shots=2)


@pytest.fixture(scope="module")
def tokenizer(task):
    return train_tokenizer(task.texts(), vocab_size=300)


def naive_rouge_l_f1(reference: str, generation: str) -> float:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(reference, generation)["rougeL"].fmeasure
