"""The relearning attack on tiny Llamas: the curve's steps, real recovery, exactness against a plain training run,
the recovered-fraction formula on hand values, and the report."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearnkit.attacks.relearn import (UNDEFINED_AGREE, UNDEFINED_MISSING, RelearnResult, evaluation_steps,
                                        pick_examples, recovered_fraction, relearn, relearn_report, teacher_forced)
from unlearnkit.errors import UnlearnkitError
from unlearnkit.evaluation.suites.tofu import evaluate_tofu
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.loop import train
from unlearnkit.training.objectives import FineTune

from conftest import FORGET, evaluator

METRICS = ("forget_Q_A_Prob", "forget_Truth_Ratio")


def run(setup, which, examples=None, **kwargs):
    settings = dict(steps=6, eval_every=3, batch_size=2, learning_rate=1e-3, metrics=METRICS)
    settings.update(kwargs)
    return relearn(setup[which], evaluator(setup["task"], setup["formatter"], max_new_tokens=8),
                   examples or FORGET[:2], **settings)


def test_recovered_fraction_on_hand_values():
    assert recovered_fraction(0.5, 0.2, 0.8).value == pytest.approx(0.3 / 0.6)
    # a metric where the target is lower than the unlearned model: the formula is direction-free
    assert recovered_fraction(0.6, 0.8, 0.2).value == pytest.approx((0.6 - 0.8) / (0.2 - 0.8))
    assert recovered_fraction(0.9, 0.2, 0.8).value == pytest.approx(0.7 / 0.6)  # overshoot > 1
    assert recovered_fraction(0.1, 0.2, 0.8).value == pytest.approx(-0.1 / 0.6)  # further forgetting < 0
    same = recovered_fraction(0.9, 0.5, 0.5 + 1e-6, tol=1e-4)
    assert same.value is None and same.reason == UNDEFINED_AGREE
    assert recovered_fraction(None, 0.2, 0.8).reason == UNDEFINED_MISSING


def test_evaluation_steps_and_pick_examples():
    assert evaluation_steps(100, 10) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert evaluation_steps(7, 3) == [0, 3, 6, 7]
    picked = pick_examples(list(range(10)), 4, seed=3)
    assert picked == pick_examples(list(range(10)), 4, seed=3) and len(set(picked)) == 4
    assert picked == sorted(picked)
    assert pick_examples(list(range(10)), 4, seed=4) != picked or pick_examples(list(range(10)), 4, seed=5) != picked
    with pytest.raises(UnlearnkitError, match="cannot pick 11"):
        pick_examples(list(range(10)), 11)


def test_curve_has_the_expected_steps_and_the_model_is_untouched(attack_setup):
    before = {k: v.clone() for k, v in attack_setup["unlearned"].state_dict().items()}
    result = run(attack_setup, "unlearned", steps=7, eval_every=3)
    assert result.steps == [0, 3, 6, 7]
    assert [len(result.curve[m]) for m in METRICS] == [4, 4]
    assert [log["step"] for log in result.train_logs] == list(range(1, 8))
    assert all(log["lr"] == pytest.approx(1e-3) for log in result.train_logs)  # constant, no warm-up
    after = attack_setup["unlearned"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_curve_matches_plain_training_and_evaluation(attack_setup, tmp_path):
    """Step 0 is the untouched model; the last point equals a plain train() run of the same steps, evaluated
    directly: evaluating inside the loss does not change the training."""
    setup, examples = attack_setup, FORGET[:3]
    result = run(setup, "unlearned", examples=examples, steps=5, eval_every=2)
    evaluate = lambda m: evaluate_tofu(m, setup["formatter"], setup["task"], metrics=set(METRICS),
                                       max_new_tokens=8, progress=False).aggregates
    start = evaluate(setup["unlearned"])
    plain = copy.deepcopy(setup["unlearned"])
    config = TrainConfig(max_steps=5, batch_size=2, learning_rate=1e-3, weight_decay=0.0, warmup_steps=0,
                         schedule="constant", save_every_epoch=False)
    train(plain, FineTune(), [setup["formatter"].encode(e.question, e.answer) for e in examples], None, None,
          setup["formatter"].pad_token_id, config, tmp_path, progress=False)
    end = evaluate(plain)
    for m in METRICS:
        assert result.curve[m][0] == pytest.approx(start[m], rel=1e-9)
        assert result.curve[m][-1] == pytest.approx(end[m], rel=1e-6)


def test_relearning_the_unlearned_model_raises_forget_probability(attack_setup):
    result = run(attack_setup, "unlearned", steps=10, eval_every=5, learning_rate=3e-3)
    prob = result.curve["forget_Q_A_Prob"]
    assert prob[-1] > 10 * prob[0] and prob[-1] > prob[1] > prob[0]


def test_target_relearned_on_itself_changes_little_and_fraction_is_undefined(attack_setup):
    target = run(attack_setup, "target")
    unlearned = run(attack_setup, "unlearned")
    target_change = abs(target.curve["forget_Q_A_Prob"][-1] - target.curve["forget_Q_A_Prob"][0])
    unlearned_change = abs(unlearned.curve["forget_Q_A_Prob"][-1] - unlearned.curve["forget_Q_A_Prob"][0])
    assert target_change < 0.1
    report = relearn_report(unlearned=target, target=target)
    for m in METRICS:
        entry = report["recovered_fraction"]["unlearned"][m]
        assert entry["value"] is None and entry["reason"] == UNDEFINED_AGREE
    # the unlearned model, with what unlearning removed, gets a defined, positive fraction
    report = relearn_report(unlearned=unlearned, target=target)
    entry = report["recovered_fraction"]["unlearned"]["forget_Q_A_Prob"]
    assert entry["value"] is not None and entry["value"] > 0 and unlearned_change > 0


def test_generation_runs_only_at_the_ends_unless_asked_and_the_ends_are_the_same(attack_setup):
    chosen = evaluator(attack_setup["task"], attack_setup["formatter"], max_new_tokens=8)
    assert teacher_forced(chosen, ["forget_Q_A_Prob", "forget_Q_A_ROUGE", "extraction_strength", "model_utility"]) \
        == ["forget_Q_A_Prob", "extraction_strength"]
    metrics = ("forget_Q_A_Prob", "forget_Q_A_ROUGE")
    ends = run(attack_setup, "unlearned", steps=6, eval_every=2, metrics=metrics)
    every = run(attack_setup, "unlearned", steps=6, eval_every=2, metrics=metrics, curve_generation=True)
    assert ends.curve["forget_Q_A_ROUGE"][1:-1] == [None, None] and None not in every.curve["forget_Q_A_ROUGE"]
    assert ends.curve["forget_Q_A_Prob"] == every.curve["forget_Q_A_Prob"]
    assert ends.after() == every.after() and ends.before() == every.before()


def test_report_assembles_curves_and_fractions_from_the_formula():
    def result(values):
        return RelearnResult(steps=[0, 5, 10], curve={"forget_Q_A_Prob": values})

    report = relearn_report(unlearned=result([0.1, 0.3, 0.5]), target=result([0.9, 0.9, 0.9]),
                            retain=result([0.2, 0.25, 0.3]))
    unlearned = report["recovered_fraction"]["unlearned"]["forget_Q_A_Prob"]
    assert unlearned["value"] == pytest.approx(0.4 / 0.8)
    assert unlearned["curve"] == pytest.approx([0.0, 0.2 / 0.8, 0.4 / 0.8])
    assert report["recovered_fraction"]["retain"]["forget_Q_A_Prob"]["value"] == pytest.approx(0.1 / 0.7)
    assert set(report["curves"]) == {"unlearned", "retain", "target"}
    # target given as plain values
    report = relearn_report(unlearned=result([0.1, 0.3, 0.5]), target={"forget_Q_A_Prob": 0.5})
    assert report["recovered_fraction"]["unlearned"]["forget_Q_A_Prob"]["value"] == pytest.approx(1.0)


def test_bad_inputs_are_user_errors(attack_setup):
    with pytest.raises(UnlearnkitError, match="no relearning examples"):
        relearn(attack_setup["unlearned"], evaluator(attack_setup["task"], attack_setup["formatter"]), [])
    with pytest.raises(UnlearnkitError, match="unknown TOFU metric"):
        run(attack_setup, "unlearned", metrics=("forget_nonsense",))
    with pytest.raises(UnlearnkitError, match="eval_every"):
        run(attack_setup, "unlearned", eval_every=0)
    with pytest.raises(UnlearnkitError, match="relearn takes an Evaluator"):  # the signature before the Evaluator
        relearn(attack_setup["unlearned"], attack_setup["formatter"], attack_setup["task"], FORGET[:2])
