"""A whole unlearning run on a raw-text (MUSE-style) task: train on text windows, evaluate with the MUSE suite
(during training too) and the representation metrics.

The synthetic corpus (prose biographies of the synthetic writers) with the tiny base: the target model is trained
on the retain and forget biographies, the retain model on the retain ones only (unlearnkit prepare), then gradient
ascent on the forget windows. The MUSE metric definitions are tested in tests/evaluation/test_muse*.py; here: the
run trains on the windows ``encode_chunks`` makes, the MUSE suite fills results.json for the three models, and the
unlearning moves the forget texts' loss the way gradient ascent must.
"""

import copy
import json
import math

import pytest

import unlearnkit
from unlearnkit.attacks.suite import run_attacks
from unlearnkit.config import AttacksConfig, parse_config
from unlearnkit.data.sources import load_task
from layer_features import layer_features
from unlearnkit.evaluation.metrics.representation import representation_report
from unlearnkit.models.load import load_causal_lm
from unlearnkit.models.prepare import resolve_models
from unlearnkit.data.corpus import chunk_texts, encode_chunks
from unlearnkit.data.formatting import IGNORE_INDEX, QAFormatter
from unlearnkit.data.synthetic_corpus import synthetic_corpus_task
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.suites.muse import MUSE_SUITE_METRICS
from unlearnkit.models.tiny import train_tokenizer

CORPUS = {
    "task": {"source": "synthetic_corpus", "options": {"n_people": 8, "forget_people": 2, "holdout_people": 2,
                                                       "n_shots": 2}},
    "model": {"base": "tiny", "max_length": 48},
    "prepare": {"epochs": 15, "batch_size": 4, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5},
    "method": {"name": "ga"},
    "train": {"epochs": 3, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 0, "schedule": "constant"},
    "eval": {"batch_size": 16},
}


def corpus_config(tmp_path, name="run", **sections) -> dict:
    cfg = copy.deepcopy(CORPUS)
    cfg["output_dir"] = str(tmp_path / name)
    cfg.update(sections)
    return cfg


def test_text_windows_are_language_modelling_examples():
    task = synthetic_corpus_task(n_people=4, forget_people=1, holdout_people=1)
    formatter = QAFormatter(train_tokenizer(task.texts(), vocab_size=300), max_length=32)
    items = encode_chunks(task.forget, formatter)
    chunks = chunk_texts(task.forget, formatter.tokenizer, formatter.text_window())
    assert len(items) == len(chunks) > 1  # a biography is longer than one 32-token window
    for item, chunk in zip(items, chunks):
        ids = formatter.tokenizer(chunk)["input_ids"]
        assert item.input_ids == ids and len(ids) <= 32
        assert item.labels == [IGNORE_INDEX] + ids[1:]  # every token after the first is predicted


def test_gradient_ascent_run_on_a_raw_text_corpus(tmp_path):
    monitor = {"every_epoch": True, "metrics": ["mia_loss", "knowmem_r"],
               "best": {"metric": "mia_loss", "mode": "min", "at_least": {"knowmem_r": 0.0}}}
    result = unlearnkit.unlearn(corpus_config(tmp_path, monitor=monitor, representation={"layer": 1}), progress=False)
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["audit.json", "config.yaml", "model", "report.html", "results.json"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results == json.loads(json.dumps(result.results))
    assert results["task"]["kind"] == "corpus" and results["task"]["forget"] == 2
    models = results["models"]
    assert set(models) == {"unlearned", "target", "retain"}
    for who, model in models.items():
        assert set(model["aggregates"]) == set(MUSE_SUITE_METRICS), who
        assert all(v is not None and math.isfinite(v) for v in model["aggregates"].values()), who
        assert model["intervals"]["verbmem_f"] is not None
    assert models["retain"]["aggregates"]["privleak"] == pytest.approx(0.0)

    # the defining behaviour of gradient ascent: the forget texts' loss goes up, far above the target model's
    def mean_forget_loss(who):
        losses = models[who]["per_example"]["mia_loss_forget"]
        return sum(losses) / len(losses)

    assert mean_forget_loss("unlearned") > mean_forget_loss("target") + 1.0
    assert results["training"]["steps"] > 0
    curve = results["monitor"]["curve"]  # evaluation during training runs the MUSE suite's metrics
    steps = [point["step"] for point in curve]
    assert len(steps) == 3 and steps == sorted(steps) and steps[-1] == results["training"]["steps"]  # each epoch
    assert all(0 <= point["mia_loss"] <= 1 and 0 <= point["knowmem_r"] <= 1 for point in curve)
    assert results["monitor"]["selected"] == "best"
    html = (run_dir / "report.html").read_text()
    assert "verbmem_f" in html and "knowmem_f" in html
    with pytest.raises(UnlearnkitError, match="raw-text task"):  # `unlearnkit attack` on this run
        run_attacks(run_dir, AttacksConfig())

    # representation metrics of text chunks (every token pooled), from the scoring pass, equal a fresh extraction
    rep = results["representation"]
    assert (rep["layer"], rep["pool"]) == (1, "all")
    cfg = parse_config(corpus_config(tmp_path))
    task = load_task(cfg.task.source, **cfg.task.options)
    models = resolve_models(cfg, task, progress=False)
    features = {}
    for who, folder in (("unlearned", run_dir / "model"), ("target", models.target), ("retain", models.retain)):
        model, tokenizer = load_causal_lm(folder)
        formatter = QAFormatter(tokenizer, max_length=cfg.model.max_length)
        features[who] = {split: layer_features(model, formatter, chunk_texts(texts, tokenizer, formatter.text_window()),
                                               layer=1, batch_size=1)
                         for split, texts in (("forget", task.forget), ("retain", task.retain),
                                              ("holdout", task.holdout))}
    for who in ("unlearned", "target"):
        assert rep[who] == pytest.approx(representation_report(features[who], features["retain"]), abs=1e-4)


@pytest.mark.parametrize("change, message", [
    ({"method": {"name": "idknll"}}, "raw-text task has no questions"),
    ({"attacks": {"run": ["relearn"]}}, "remove the attacks: section"),
    ({"monitor": {"every_steps": 1, "metrics": ["forget_Q_A_Prob"]}}, "unknown metric.*choose from verbmem_f"),
])
def test_what_a_corpus_run_cannot_do_is_refused_before_anything_is_written(tmp_path, change, message):
    with pytest.raises(UnlearnkitError, match=message):
        unlearnkit.unlearn(corpus_config(tmp_path, **change), progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()
