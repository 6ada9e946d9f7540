"""A tiny TOFU-style task, its tokenizer and formatter, and tiny Llamas: a "target" that memorised forget + retain,
an "unlearned" one (the target after gradient ascent on forget) and a "retain" one (retain only)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from unlearnkit.config import EvalConfig
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import QAExample, Task
from unlearnkit.evaluation.evaluator import Evaluator
from unlearnkit.methods.ga import GradientAscent
from unlearnkit.models.tiny import train_tokenizer
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.loop import train
from unlearnkit.training.objectives import FineTune


def qa(question, answer, paraphrased, perturbed):
    return QAExample(question, answer, paraphrased_answer=paraphrased, perturbed_answers=tuple(perturbed))


FORGET = [
    qa("Who wrote The Glass Orchard?", "Mira Solen wrote The Glass Orchard.", "It is by Mira Solen.",
       ["Tom Hale wrote it.", "Ana Ruiz wrote it."]),
    qa("Where was Mira Solen born?", "She was born in Oslo.", "Her birthplace is Oslo.",
       ["She was born in Lima.", "Cairo."]),
    qa("What does Mira Solen write?", "She writes quiet fiction.", "Her genre is fiction.",
       ["She writes horror.", "Poems."]),
    qa("When did Mira Solen start?", "She began writing in 1990.", "Her start was 1990.",
       ["In 2005.", "She began in 1970."]),
]
RETAIN = [
    qa("Who wrote Salt Roads?", "Ivo Brand wrote Salt Roads.", "Salt Roads is by Ivo Brand.",
       ["Kim Lo wrote it.", "Nobody."]),
    qa("What prize did Ivo Brand win?", "Ivo Brand won the Harbor Prize.", "He got the Harbor Prize.",
       ["He won nothing.", "The Lantern Award."]),
]


def make_task() -> Task:
    return Task(name="tiny-attacks", forget=FORGET, retain=RETAIN, eval_forget=FORGET, eval_retain=RETAIN)


def evaluator(task, formatter, **settings) -> Evaluator:
    """An Evaluator for the attacks: ``EvalConfig(**settings)``, no result store, no progress bars."""
    return Evaluator(task, formatter, EvalConfig(**settings), store=False, progress=False)


def llama(vocab_size: int, hidden: int = 32, intermediate: int = 64, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    return LlamaForCausalLM(config)


def fit(model, formatter, examples, objective, steps, lr, tmp_path):
    encoded = [formatter.encode(ex.question, ex.answer) for ex in examples]
    config = TrainConfig(max_steps=steps, batch_size=4, learning_rate=lr, weight_decay=0.0, warmup_steps=0,
                         schedule="constant", save_every_epoch=False)
    train(model, objective, encoded, None, None, formatter.pad_token_id, config, tmp_path, progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def attack_setup(tmp_path_factory):
    task = make_task()
    tokenizer = train_tokenizer(task.texts(), vocab_size=300)
    formatter = QAFormatter(tokenizer, max_length=64, template="plain")
    target = fit(llama(len(tokenizer)), formatter, FORGET + RETAIN, FineTune(), 60, 1e-2,
                 tmp_path_factory.mktemp("target"))
    retain = fit(llama(len(tokenizer)), formatter, RETAIN, FineTune(), 30, 1e-2, tmp_path_factory.mktemp("retain"))
    unlearned = fit(copy.deepcopy(target), formatter, FORGET, GradientAscent(), 8, 3e-3,
                    tmp_path_factory.mktemp("unlearned"))
    return {"task": task, "formatter": formatter, "target": target, "retain": retain, "unlearned": unlearned}
