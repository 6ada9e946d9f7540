"""A run with task.forget_subset trains on the chosen part of the forget set and is evaluated on all of it.

The target is the untrained tiny base (no fine-tuning, no retain model: the check is about which examples are
trained on and evaluated, not about forgetting), so the run costs seconds."""

import json

import unlearnkit
from unlearnkit.data.corpus import training_items
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.sources import load_task
from unlearnkit.data.subset import forget_losses
from unlearnkit.models.bases import base_folder
from unlearnkit.models.load import load_causal_lm
from unlearnkit.runio import default_cache_dir

TASK = {"n_people": 6, "forget_people": 2, "holdout_people": 1}


def test_run_trains_on_the_subset_and_evaluates_the_whole_forget_set(tmp_path):
    strategy = "hardest"
    task = load_task("synthetic", **TASK)
    target = base_folder("tiny", task, seed=0, cache_dir=default_cache_dir())
    cfg = {"task": {"source": "synthetic", "options": TASK,
                    "forget_subset": {"fraction": 0.25, "strategy": strategy, "seed": 1}},
           "model": {"base": "tiny", "target": target, "max_length": 96},
           "method": {"name": "idknll"},  # its refusals must be subset with the questions
           "train": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-4, "warmup_steps": 0, "schedule": "constant"},
           "eval": {"batch_size": 32, "max_new_tokens": 4, "intervals": False},
           "output_dir": str(tmp_path / "run")}
    result = unlearnkit.unlearn(cfg, progress=False)
    results = json.loads((result.run_dir / "results.json").read_text())

    model, tokenizer = load_causal_lm(target)
    formatter = QAFormatter(tokenizer, max_length=96)
    items = training_items(task.forget, formatter)
    losses = forget_losses(model, items, formatter.pad_token_id)
    k = round(0.25 * len(items))
    subset = results["training"]["forget_subset"]
    assert subset["of"] == len(items) and subset["size"] == k == len(subset["indices"])
    assert subset["indices"] == sorted(sorted(range(len(items)), key=lambda i: (losses[i], i))[:k])
    assert results["training"]["steps"] == -(-k // 2)  # one epoch of the subset alone, batch 2
    forget_size = results["task"]["eval_forget"]
    assert forget_size == len(task.eval_forget) > k
    for who in ("unlearned", "target"):  # evaluation covers the whole forget set
        assert len(results["models"][who]["per_example"]["forget_Q_A_Prob"]) == forget_size
