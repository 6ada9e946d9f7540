"""Unlearnable examples by Bayes-error maximisation (research/methods.md §19; arXiv:2511.08191, cat-claws/unlearnable).

The estimator is checked against a naive loop written from its definition (K_ij = exp(−||F_i − F_j||²/(2σ²)),
K_ii = 0, p̂(c|x_i) = Σ_j K_ij 1[y_j = c] / Σ_j K_ij, BER = mean_i (1 − max_c p̂)); the perturbation against its ℓ∞
bound and the data's range; the ascent against its own objective (it rises); the paper's claim on digits (models
trained on the protected set do clearly worse on the clean test set); the written .npz against the ``arrays``
source; and the command's bad options against one-line errors.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from unlearnkit.classifier.data import load_task
from unlearnkit.classifier.protect import bayes_error, protect, protection_accuracy, save_protected
from unlearnkit.cli import app
from unlearnkit.errors import UnlearnkitError

runner = CliRunner()


@pytest.fixture(scope="module")
def small():
    full = load_task("digits")
    return dataclasses.replace(full, train=full.train.subset(np.arange(150)))


def naive_bayes_error(features, labels, num_classes, sigma):
    n = len(labels)
    total = 0.0
    for i in range(n):
        votes = [0.0] * num_classes
        for j in range(n):
            if i != j:
                votes[labels[j]] += math.exp(-sum((a - b) ** 2 for a, b in zip(features[i], features[j]))
                                             / (2 * sigma ** 2))
        total += 1 - max(votes) / sum(votes)
    return total / n


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_bayes_error_estimate_equals_the_definition(sigma):
    rng = np.random.default_rng(0)
    features = rng.normal(0, 0.5, (23, 4))
    labels = rng.integers(0, 3, 23)
    expected = naive_bayes_error(features.tolist(), labels.tolist(), 3, sigma)
    f, y = torch.as_tensor(features), torch.as_tensor(labels)
    assert float(bayes_error(f, y, 3, sigma)) == pytest.approx(expected, rel=1e-10)
    chunks = sum(float(bayes_error(f, y, 3, sigma, slice(s, s + 5))) for s in range(0, 23, 5))
    assert chunks == pytest.approx(expected, rel=1e-10)  # row chunks add up to the whole


def test_separated_classes_have_no_error_and_identical_ones_the_chance_rate():
    f = torch.tensor([[0.0], [0.01], [5.0], [5.01]], dtype=torch.float64)
    assert float(bayes_error(f, torch.tensor([0, 0, 1, 1]), 2, 0.3)) == pytest.approx(0.0, abs=1e-12)
    same = torch.zeros(6, 2, dtype=torch.float64)  # every neighbour at distance 0: p̂ is the others' label share
    assert float(bayes_error(same, torch.tensor([0, 0, 0, 1, 1, 1]), 2, 0.3)) == pytest.approx(0.4)


@pytest.mark.parametrize("embedding", ["input", "model"])
def test_perturbation_respects_its_bound_and_raises_the_bayes_error(small, embedding, tmp_path):
    epsilon = 0.1
    result = protect(small, {"epsilon": epsilon, "steps": 15, "lr": 0.02, "embedding": embedding,
                             "chunk_size": 64}, cache_dir=tmp_path)
    change = result.x - small.train.x
    assert np.abs(change).max() <= epsilon + 1e-6 and np.abs(change).max() > epsilon / 2
    assert result.x.min() >= small.train.x.min() and result.x.max() <= small.train.x.max()
    assert len(result.bayes_error) == 16
    assert result.bayes_error[-1] > result.bayes_error[0] + 0.05, result.bayes_error
    if embedding == "input":  # the first value is the clean data's estimate: features x / max|x|
        clean = naive_bayes_error((small.train.x.reshape(150, -1) / small.train.x.max()).tolist(),
                                  small.train.y.tolist(), 10, 0.3)
        assert result.bayes_error[0] == pytest.approx(clean, rel=1e-5)


def test_models_trained_on_the_protected_digits_score_clearly_lower_on_the_clean_test_set(tmp_path):
    """The paper's claim, measured on 600 digits (ε = 0.3, the reference's MNIST budget; 30 steps): two MLPs per set,
    default recipe. Measured here: 0.94 clean, 0.72 protected (docs/benchmarks.md has the full-set numbers, and
    the budgets where it does not hold)."""
    full = load_task("digits")
    task = dataclasses.replace(full, train=full.train.subset(np.arange(600)))
    result = protect(task, {"epsilon": 0.3, "steps": 30, "lr": 0.05}, cache_dir=tmp_path)
    accuracy = protection_accuracy(task, result.x, seeds=[0, 1], cache_dir=tmp_path)
    assert accuracy["clean"] > 0.9
    assert accuracy["protected"] < accuracy["clean"] - 0.1, accuracy


def test_written_arrays_are_the_task_with_protected_inputs(small, tmp_path):
    x = small.train.x + 0.01
    save_protected(tmp_path / "p.npz", small, x)
    again = load_task("arrays", {"path": str(tmp_path / "p.npz")})
    np.testing.assert_array_equal(again.train.x, x.astype(np.float32))
    for split in ("train", "test", "holdout"):
        np.testing.assert_array_equal(getattr(again, split).y, getattr(small, split).y)
    np.testing.assert_array_equal(again.test.x, small.test.x)
    with pytest.raises(UnlearnkitError, match="must end in .npz"):
        save_protected(tmp_path / "p.txt", small, x)


def test_command_writes_the_protected_set_and_reports_the_estimate(tmp_path):
    out = tmp_path / "protected.npz"
    result = runner.invoke(app, ["protect", "--task", "digits", "--output", str(out), "--steps", "2",
                                 "--seeds", "1", "--epsilon", "0.05", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Bayes-error estimate:" in result.output and out.is_file()
    assert "test accuracy of 1 model(s) trained on the clean set: 0.9" in result.output
    assert np.abs(load_task("arrays", {"path": str(out)}).train.x - load_task("digits").train.x).max() <= 0.05 + 1e-6


@pytest.mark.parametrize("args,words", [
    (["--epsilon", "0"], "epsilon must be greater than 0"),
    (["--embedding", "resnet"], "embedding must be 'model' or 'input'"),
    (["--steps", "0"], "steps must be greater than or equal to 1"),
    (["--seeds", "-1"], "--seeds must be >= 0"),
    (["--task-option", "test_fraction"], "is not KEY=VALUE"),
    (["--task-option", "colour=1"], "unknown option 'colour'"),
    (["--output", "protected.txt"], "must end in .npz"),
    (["--output", "missing/protected.npz"], "does not exist"),
])
def test_bad_options_are_one_line_errors(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    base = {"--task": "digits", "--output": "protected.npz"}
    for flag, value in zip(args[::2], args[1::2]):
        base.pop(flag, None)
    command = ["protect", *[v for kv in base.items() for v in kv], *args]
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_unknown_task_source_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["protect", "--task", "cifar", "--output", str(tmp_path / "p.npz")])
    assert result.exit_code == 2 and "unknown classifier task source 'cifar'" in result.output
