"""Run by test_stored_and_sharded_eval.py under `accelerate launch --multi_gpu --num_processes 2`: evaluate the
fixture models (TOFU suite, then MUSE suite on a raw-text task) in a process group and write rank 0's results
(and each rank's share of the work) to OUT_DIR."""

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from store_fixture import EVAL, MUSE_EVAL, build, build_corpus
from unlearnkit.evaluation.suites.muse import evaluate_muse_suite
from unlearnkit.evaluation.suites.tofu import evaluate_tofu

torch.set_num_threads(1)
state = PartialState(cpu=True)
out = Path(sys.argv[1])


def evaluate_counted(name, build_fixture, evaluate, settings):
    """Evaluate the fixture in the process group; write this rank's forward calls and rank 0's result."""
    model, formatter, task = build_fixture()
    calls = {"n": 0}
    model.register_forward_hook(lambda module, args, output: calls.__setitem__("n", calls["n"] + 1))
    result = evaluate(model, formatter, task, progress=False, **settings)
    (out / f"{name}-forward-calls-{state.process_index}.json").write_text(json.dumps(calls["n"]))
    if state.is_main_process:
        (out / f"{name}.json").write_text(json.dumps(result.to_dict()))


# with a result store shared by the ranks: each rank appends its own batches (load, barrier, compute, append)
evaluate_counted("tofu", build, evaluate_tofu, {**EVAL, "store_root": out / "store"})
evaluate_counted("muse", build_corpus, evaluate_muse_suite, {**MUSE_EVAL, "store_root": out / "store"})
state.wait_for_everyone()
torch.distributed.destroy_process_group()
