"""Every registered method, run for a few steps with its documented defaults on the synthetic task with the tiny
base, lowers the forget answers' probability below the target model's.

One target model is prepared for the whole module (the same task and recipe as tests/pipeline/test_run.py, so the
session's shared cache holds it once); each method then trains a copy for one epoch of the forget set through the
real training loop (:func:`unlearnkit.training.loop.train`); an inference-time method (``kind == "inference"``) is
fitted on the untouched copy instead and its transform installed. The check is the mean over forget examples of
``exp(-mean answer-token NLL)`` (TOFU's forget Q_A_Prob), computed here one example at a time.

A method added to :mod:`unlearnkit.methods` is picked up automatically. Its training settings default to
``DEFAULT_TRAIN``; a method whose documented defaults need a different step size (or a parameter that names a
layer of a larger model) says so in ``TRAIN_OVERRIDES`` (``PARAM_OVERRIDES``) with the reason.
"""

from __future__ import annotations

import pytest
import torch

from unlearnkit.data.corpus import training_items
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.idk import assign_idk
from unlearnkit.data.sources import load_task
from unlearnkit.methods.registry import available, get_method
from unlearnkit.models.load import load_causal_lm
from unlearnkit.models.prepare import prepare_models
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.loop import train

TASK = {"n_people": 8, "forget_people": 2, "holdout_people": 2}
PREPARE = TrainConfig(epochs=10, batch_size=8, learning_rate=3e-3, weight_decay=0.0, warmup_steps=5)
MAX_LENGTH = 96
DEFAULT_TRAIN = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 0, "schedule": "constant"}
# method name -> changed training settings / method parameters, each with its reason
TRAIN_OVERRIDES: dict[str, dict] = {
    "ofmu": {"batch_size": 8},  # one step over the whole forget set: each OFMU step costs ~15 F+B (third-order autodiff)
}
PARAM_OVERRIDES: dict[str, dict] = {
    "rmu": {"layer": None},  # the default layer 7 is the paper's (Zephyr-7B); the tiny base has 4: the middle one
    "adv_npo": {"perturb_layer": 1},  # the default layer 4 is the paper's (7B models); the tiny base has layers 0..3
    "adv_ga": {"perturb_layer": 1},
    # OpenUnlearning's PDU.yaml leaves eps required (???), and so does unlearnkit: any bound works for a few steps
    # (the dual variable does not move before its 5 warm-up epochs)
    "pdu": {"retain_loss_eps": 1.0},
    # the default layer 22 is Llama-3-8B's; LUNAR's refusal prompts are required and the synthetic task has none:
    # questions about people the target never saw (as the reference's "unverified" questions)
    "lunar": {"layer": None, "refusal_prompts": ["Where was Odalys Brenner born?", "In what year was Tamsin Varga "
                                                 "born?", "What is the profession of Ilario Quent?"]},
    # each inner step is a double backward (about 6 F+B); the default T=5 takes about a minute here, T=1 runs the
    # same code path (inner ascent, then the outer penalty step) in a fifth of the time
    "ofmu": {"inner_steps": 1},
}


@pytest.fixture(scope="module")
def prepared():
    task = load_task("synthetic", **TASK)
    models = prepare_models(task, "tiny", PREPARE, max_length=MAX_LENGTH, progress=False, log=lambda *_: None)
    _, tokenizer = load_causal_lm(models.target)
    formatter = QAFormatter(tokenizer, max_length=MAX_LENGTH)
    forget = training_items(task.forget, formatter)
    retain = training_items(task.retain, formatter)
    refusals = assign_idk(len(task.forget), task.idk_answers, seed=0)
    idk = [formatter.encode(e.question, r) for e, r in zip(task.forget, refusals)]
    return models, formatter, forget, retain, idk


def forget_probability(model, forget) -> float:
    """Mean over forget examples of exp(-mean_t NLL of the answer tokens) (the length-normalised probability of
    metrics.md §1), one unpadded example at a time."""
    values = []
    with torch.no_grad():
        for item in forget:
            ids = torch.tensor([item.input_ids])
            labels = torch.tensor(item.labels[1:])
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            answer = labels != -100
            values.append(logprobs[answer].gather(1, labels[answer, None]).mean().exp().item())
    return sum(values) / len(values)


@pytest.mark.parametrize("name", sorted(available()))
def test_method_lowers_forget_probability_below_the_target(name, prepared, tmp_path):
    models, formatter, forget, retain, idk = prepared
    method = get_method(name, **PARAM_OVERRIDES.get(name, {}))
    model, _ = load_causal_lm(models.target)
    before = forget_probability(model, forget)
    if method.kind == "inference":  # no training: fit on the untouched model, then install the transform
        artifact, _ = method.fit(model, forget, retain, formatter.pad_token_id)
        method.apply(model, artifact)
    else:
        settings = TrainConfig(**{**DEFAULT_TRAIN, **TRAIN_OVERRIDES.get(name, {})})
        train(model, method, forget, retain if method.uses_retain else None, idk if method.uses_idk else None,
              formatter.pad_token_id, settings, tmp_path, progress=False,
              reference_model_factory=lambda: load_causal_lm(models.target)[0])
    after = forget_probability(model, forget)
    assert after < before, f"{name}: forget Q_A_Prob {before:.4f} -> {after:.4f}"
