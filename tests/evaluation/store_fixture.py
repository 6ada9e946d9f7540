"""A small deterministic model + task for the stored and sharded evaluation tests (also run by the 2-process script)."""

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.synthetic import make_synthetic_task
from unlearnkit.data.synthetic_corpus import synthetic_corpus_task
from unlearnkit.models.tiny import build_tiny

EVAL = {"batch_size": 4, "max_new_tokens": 6}
MUSE_EVAL = {"batch_size": 2, "chunk_tokens": 24, "prefix_tokens": 8, "verbmem_max_new_tokens": 8,
             "knowmem_max_new_tokens": 6}


def build():
    task = make_synthetic_task(n_people=6, forget_people=1, holdout_people=1)
    model, tokenizer = build_tiny(task.texts(), seed=0, vocab_size=400, hidden_size=32, layers=2, heads=2)
    return model, QAFormatter(tokenizer, max_length=64), task


def build_corpus():
    """A tiny model and a raw-text task (the MUSE suite's generations and chunk scores)."""
    task = synthetic_corpus_task(n_people=6, forget_people=1, holdout_people=1, n_shots=1)
    model, tokenizer = build_tiny(task.texts(), seed=0, vocab_size=400, hidden_size=32, layers=2, heads=2)
    return model, QAFormatter(tokenizer, max_length=64), task
