"""The scoring engine's disk store (resume, instant repeat) and sharding across processes (identical results)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from store_fixture import EVAL, MUSE_EVAL, build, build_corpus
from unlearnkit.evaluation.suites.muse import evaluate_muse_suite
from unlearnkit.evaluation.scoring.store import ResultStore, model_fingerprint
from unlearnkit.evaluation.scoring.shared_prefix import SharedPrefix
from unlearnkit.evaluation.suites.tofu import evaluate_tofu


def count_forward_calls(model):
    calls = {"n": 0}
    model.register_forward_hook(lambda module, args, output: calls.__setitem__("n", calls["n"] + 1))
    return calls


def test_second_evaluation_of_the_same_model_reads_the_store(tmp_path):
    model, formatter, task = build()
    first = evaluate_tofu(model, formatter, task, progress=False, store_root=tmp_path, **EVAL)
    calls = count_forward_calls(model)
    again = evaluate_tofu(model, formatter, task, progress=False, store_root=tmp_path, **EVAL)
    assert calls["n"] == 0
    assert again.to_dict() == first.to_dict()
    plain = evaluate_tofu(model, formatter, task, progress=False, **EVAL)
    assert plain.to_dict() == first.to_dict()


def test_a_killed_evaluation_resumes_without_recomputing_finished_batches(tmp_path):
    model, formatter, task = build()
    reference = evaluate_tofu(model, formatter, task, progress=False, **EVAL)
    calls = count_forward_calls(model)
    total_forward = None

    def die_after_the_first_batch(module, args):  # calls: the prompts' shared opening, then per batch two passes
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")

    handle = model.register_forward_pre_hook(die_after_the_first_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_tofu(model, formatter, task, progress=False, store_root=tmp_path, **EVAL)
    handle.remove()
    # a torn line from the kill must be ignored
    part = next(tmp_path.glob("*/scores-*/part-0.jsonl"))
    with open(part, "a") as f:
        f.write('{"key": "half a li')

    calls["n"] = 0
    resumed = evaluate_tofu(model, formatter, task, progress=False, store_root=tmp_path, **EVAL)
    resumed_calls = calls["n"]
    calls["n"] = 0
    evaluate_tofu(model, formatter, task, progress=False, store_root=tmp_path / "fresh", **EVAL)
    total_forward = calls["n"]
    # the finished batch's prompt and answer passes were read, not recomputed (the opening runs again)
    assert resumed_calls == total_forward - 2
    assert resumed.to_dict() == reference.to_dict()


def test_fingerprint_changes_with_any_weight():
    model, formatter, _ = build()
    before = model_fingerprint(model, formatter)
    assert model_fingerprint(model, formatter) == before
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(model, formatter) != before


def count_openings(monkeypatch):
    """A counter of the runs of a shared prompt opening (unlearnkit.evaluation.scoring.shared_prefix), one forward call each."""
    runs = {"n": 0}
    original = SharedPrefix._run

    def counted(self):
        runs["n"] += 1
        return original(self)

    monkeypatch.setattr(SharedPrefix, "_run", counted)
    return runs


def test_two_processes_give_exactly_the_single_process_result(tmp_path, monkeypatch):
    model, formatter, task = build()
    calls, openings = count_forward_calls(model), count_openings(monkeypatch)
    single = evaluate_tofu(model, formatter, task, progress=False, **EVAL)
    single_calls = calls["n"]
    script = Path(__file__).with_name("sharded_eval_script.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(script.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = json.loads((tmp_path / "tofu.json").read_text())
    assert sharded == json.loads(json.dumps(single.to_dict()))  # same values, same order, bit for bit
    per_rank = [json.loads((tmp_path / f"tofu-forward-calls-{r}.json").read_text()) for r in (0, 1)]
    # the work was shared, none of it repeated but the prompts' shared opening, which each process runs for itself
    assert 0 < openings["n"] and min(per_rank) > 0 and sum(per_rank) <= single_calls + openings["n"]

    # the MUSE suite on a raw-text task: generations (VerbMem, KnowMem) and chunk scores shared out the same way
    model, formatter, task = build_corpus()
    calls = count_forward_calls(model)
    openings["n"] = 0
    single_muse = evaluate_muse_suite(model, formatter, task, progress=False, **MUSE_EVAL)
    assert json.loads((tmp_path / "muse.json").read_text()) == json.loads(json.dumps(single_muse.to_dict()))
    per_rank = [json.loads((tmp_path / f"muse-forward-calls-{r}.json").read_text()) for r in (0, 1)]
    # as for TOFU: each process runs the KnowMem prompts' shared opening (the few-shot examples) for itself
    assert 0 < openings["n"] and min(per_rank) > 0 and sum(per_rank) <= calls["n"] + openings["n"]


def test_a_line_appended_after_a_torn_one_stays_whole(tmp_path):
    """A killed writer leaves half a line; the next append starts a new line, so only the torn one is lost."""
    store = ResultStore(tmp_path, "model", "scores", {"version": 1})
    store.append({"a": {"v": 1}})
    with open(store.folder / "part-0.jsonl", "a") as handle:
        handle.write('{"key": "half", "val')
    store.append({"b": {"v": 2}})
    store.append({"c": {"v": 3}})
    assert store.load() == {"a": {"v": 1}, "b": {"v": 2}, "c": {"v": 3}}
