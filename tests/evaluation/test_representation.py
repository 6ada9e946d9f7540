"""Representation-level metrics (CKA, k-NN, linear probe) and layer feature extraction.

Every value is checked against an independent computation: CKA against explicit-loop kernels with an explicit
centring matrix, the feature-space formula and (one feature) the squared Pearson correlation; k-NN against a toy
set worked out by hand and a plain numpy k-NN; features against one-example-at-a-time forward passes.
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.model_selection import StratifiedKFold
from transformers import LlamaForCausalLM

from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import QAExample
from unlearnkit.errors import UnlearnkitError
from layer_features import layer_features
from unlearnkit.evaluation.metrics.representation import (
    knn_accuracy,
    linear_cka,
    probe_accuracy,
    rbf_cka,
    representation_report,
    separability,
)
from unlearnkit.models.tiny import tiny_config, train_tokenizer

RNG = np.random.default_rng(0)


def random_orthogonal(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# ------------------------------------------------------------------------------------- naive CKA, written out


def naive_hsic(k, l):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    a, b = h @ k @ h, h @ l @ h
    return sum(a[i, j] * b[i, j] for i in range(n) for j in range(n))


def naive_linear_gram(x):
    n = len(x)
    return np.array([[sum(x[i, f] * x[j, f] for f in range(x.shape[1])) for j in range(n)] for i in range(n)])


def naive_rbf_gram(x):
    n = len(x)
    sq = np.array([[sum((x[i, f] - x[j, f]) ** 2 for f in range(x.shape[1])) for j in range(n)] for i in range(n)])
    pairs = [sq[i, j] for i in range(n) for j in range(n) if i != j and sq[i, j] > 0]
    sigma = math.sqrt(float(np.median(pairs)))
    return np.array([[math.exp(-sq[i, j] / (2 * sigma**2)) for j in range(n)] for i in range(n)])


def naive_cka(k, l):
    return naive_hsic(k, l) / math.sqrt(naive_hsic(k, k) * naive_hsic(l, l))


def test_linear_cka_equals_the_written_out_formula_and_the_feature_space_formula():
    x, y = RNG.normal(size=(9, 4)), RNG.normal(size=(9, 6))
    y[:, :2] += 2 * x[:, :2]  # partly related, so the value is neither ~0 nor 1
    expected = naive_cka(naive_linear_gram(x), naive_linear_gram(y))
    xc, yc = x - x.mean(0), y - y.mean(0)
    feature_space = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert 0.2 < expected < 0.95
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)
    assert linear_cka(x, y) == pytest.approx(feature_space, rel=1e-10)


def test_linear_cka_of_one_feature_is_the_squared_pearson_correlation():
    x, y = RNG.normal(size=(12, 1)), RNG.normal(size=(12, 1))
    y += x
    assert linear_cka(x, y) == pytest.approx(pearsonr(x[:, 0], y[:, 0])[0] ** 2, rel=1e-10)


def test_rbf_cka_equals_the_written_out_formula_with_the_median_bandwidth():
    x, y = RNG.normal(size=(8, 3)), RNG.normal(size=(8, 5))
    y[:, :3] += x
    expected = naive_cka(naive_rbf_gram(x), naive_rbf_gram(y))
    assert 0.2 < expected < 0.99
    assert rbf_cka(x, y) == pytest.approx(expected, rel=1e-10)


def test_rbf_bandwidth_ignores_duplicate_rows_like_the_reference():
    x = RNG.normal(size=(7, 3))
    x[3] = x[0]  # a zero off-diagonal distance: left out of the median (UUEF's KX[KX != 0])
    y = RNG.normal(size=(7, 2)) + x[:, :2]
    assert rbf_cka(x, y) == pytest.approx(naive_cka(naive_rbf_gram(x), naive_rbf_gram(y)), rel=1e-10)


@pytest.mark.parametrize("cka", [linear_cka, rbf_cka])
def test_cka_of_a_matrix_with_itself_is_one(cka):
    x = RNG.normal(size=(20, 7))
    assert cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cka(torch.tensor(x, dtype=torch.float32), torch.tensor(x)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("cka", [linear_cka, rbf_cka])
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(cka):
    x, y = RNG.normal(size=(15, 6)), RNG.normal(size=(15, 4))
    y[:, :3] += x[:, :3]
    base = cka(x, y)
    q = random_orthogonal(6, RNG)
    assert cka(x @ q, y) == pytest.approx(base, rel=1e-9)
    assert cka(3.7 * x, 0.2 * y) == pytest.approx(base, rel=1e-9)
    assert cka(x + 5.0, y) == pytest.approx(base, rel=1e-9)  # translation (centring)


def test_linear_cka_is_not_invariant_to_anisotropic_scaling():
    x = RNG.normal(size=(15, 6))
    assert linear_cka(x, x * np.array([10, 1, 1, 1, 1, 1])) < 0.9


def test_cka_of_independent_features_is_small_and_constant_features_give_nan():
    x, y = RNG.normal(size=(400, 3)), RNG.normal(size=(400, 3))
    assert linear_cka(x, y) < 0.05
    assert math.isnan(linear_cka(np.ones((5, 3)), RNG.normal(size=(5, 3))))
    assert math.isnan(rbf_cka(np.ones((5, 3)), RNG.normal(size=(5, 3))))


def test_cka_user_errors():
    with pytest.raises(UnlearnkitError, match="4 rows and y 5"):
        linear_cka(np.zeros((4, 2)), np.zeros((5, 2)))
    with pytest.raises(UnlearnkitError, match="2-D"):
        rbf_cka(np.zeros(4), np.zeros(4))
    with pytest.raises(UnlearnkitError, match="at least 2 examples"):
        linear_cka(np.zeros((1, 2)), np.zeros((1, 2)))


# ------------------------------------------------------------------------------------------------ k-NN and probe


def polar(angle_deg, radius):
    a = math.radians(angle_deg)
    return [radius * math.cos(a), radius * math.sin(a)]


def test_knn_accuracy_on_a_hand_worked_toy_set():
    # train: label 0 at 0°, 10°, 20°; label 1 at 80°, 90°, 100° (radii differ: cosine ignores them)
    train = [(0, 1, 0), (10, 5, 0), (20, 0.5, 0), (80, 1, 1), (90, 2, 1), (100, 1, 1)]
    train_x = np.array([polar(a, r) for a, r, _ in train])
    train_y = np.array([lab for _, _, lab in train])
    # 3 nearest by angle: 30° -> 20,10,0 -> 0 | 58° -> 80,90,20 -> 1 | 47° -> 20,80,10 -> 0 | 3° -> 0,10,20 -> 0
    test_x = np.array([polar(30, 3), polar(58, 1), polar(47, 1), polar(3, 10)])
    test_y = np.array([0, 1, 1, 1])  # right, right, wrong, wrong
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=3) == pytest.approx(0.5)
    # k = 5 at 58°: 80, 90, 20, 100, 10 -> 1,1,0,1,0 -> 1; at 47°: 20, 80, 10, 90, 0 -> 0,1,0,1,0 -> 0
    assert knn_accuracy(train_x, train_y, test_x[1:3], np.array([1, 0]), k=5) == pytest.approx(1.0)


def test_knn_uses_cosine_not_euclidean_distance():
    train_x, train_y = np.array([[1.0, 0.0], [10.0, 10.0]]), np.array([0, 1])
    # (10, 3): angle 16.7°, closer to 0° than to 45° (cosine: label 0); Euclidean: 7.0 from (10, 10) (label 1)
    assert knn_accuracy(train_x, train_y, np.array([[10.0, 3.0]]), np.array([0]), k=1) == 1.0


def naive_cosine_knn(train_x, train_y, test_x, k):
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    dist = 1 - unit(test_x) @ unit(train_x).T
    preds = []
    for row in dist:
        votes = train_y[np.argsort(row, kind="stable")[:k]]
        preds.append(int(votes.sum() * 2 > k))
    return np.array(preds)


def test_cross_validated_knn_equals_a_plain_numpy_knn_on_the_same_folds():
    x = RNG.normal(size=(40, 5))
    labels = (RNG.random(40) < 0.4).astype(int)
    x[labels == 1, 0] += 1.0  # weakly separable: the accuracy is neither chance nor 1
    correct = 0
    for train, test in StratifiedKFold(5, shuffle=True, random_state=3).split(x, labels):
        correct += np.sum(naive_cosine_knn(x[train], labels[train], x[test], 5) == labels[test])
    result = separability(x, labels, k=5, folds=5, seed=3)
    assert result["knn_accuracy"] == pytest.approx(correct / 40)
    assert result["chance"] == pytest.approx(max(labels.mean(), 1 - labels.mean()))


def test_probe_on_linearly_separable_data_is_perfect_and_on_xor_it_is_not():
    n = 30
    labels = np.r_[np.zeros(n, int), np.ones(n, int)]
    separable = RNG.normal(size=(2 * n, 4))
    separable[:, 0] += np.where(labels == 1, 6.0, -6.0)
    assert separability(separable, labels)["probe_accuracy"] == 1.0
    assert probe_accuracy(separable[::2], labels[::2], separable[1::2], labels[1::2]) == 1.0
    # XOR: four tight clusters at (±1, ±1), label = sign(x)·sign(y): no line separates them, cosine k-NN does
    corners = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], float)
    xor = np.repeat(corners, 15, axis=0) + RNG.normal(scale=0.05, size=(60, 2))
    xor_labels = np.repeat([0, 0, 1, 1], 15)
    result = separability(xor, xor_labels)
    assert result["knn_accuracy"] == 1.0
    assert result["probe_accuracy"] <= 0.8


def test_separability_user_errors():
    x = RNG.normal(size=(12, 3))
    with pytest.raises(UnlearnkitError, match="lower folds"):
        separability(x, np.r_[np.zeros(9, int), np.ones(3, int)])
    with pytest.raises(UnlearnkitError, match="two labels"):
        separability(x, np.zeros(12, int))
    with pytest.raises(UnlearnkitError, match="one entry per row"):
        separability(x, np.zeros(5, int))
    with pytest.raises(UnlearnkitError, match="lower k"):
        separability(x, np.r_[np.zeros(6, int), np.ones(6, int)], k=11, folds=2)


def test_representation_report_names_and_values():
    forget, retain, holdout = RNG.normal(size=(10, 4)), RNG.normal(size=(12, 4)), RNG.normal(size=(10, 4))
    unlearned = {"forget": forget + 3.0, "retain": retain, "holdout": holdout}
    retain_model = {"forget": forget @ random_orthogonal(4, RNG), "retain": retain * 2.0, "holdout": holdout[:, ::-1]}
    report = representation_report(unlearned, retain_model, seed=1)
    for split in ("forget", "retain", "holdout"):  # the same features up to rotation, scale and shift
        assert report[f"cka_linear_{split}"] == pytest.approx(1.0)
        assert report[f"cka_rbf_{split}"] == pytest.approx(1.0)
    labels = np.r_[np.ones(10, int), np.zeros(12, int)]
    direct = separability(np.vstack([forget + 3.0, retain]), labels, seed=1)
    assert report["unlearned_knn_forget_vs_retain"] == direct["knn_accuracy"]
    assert report["unlearned_probe_forget_vs_retain"] == direct["probe_accuracy"]
    assert report["chance_forget_vs_retain"] == pytest.approx(12 / 22)
    assert {"retain_knn_forget_vs_holdout", "retain_probe_forget_vs_holdout", "chance_forget_vs_holdout"} <= set(report)
    with pytest.raises(UnlearnkitError, match="no 'forget' split"):
        representation_report({"retain": retain}, {"retain": retain})


# --------------------------------------------------------------------------------------------- layer features

PAIRS = [
    ("Who wrote Blue Rivers?", "Ada Quill wrote Blue Rivers in 1990."),
    ("Where was Bo Lin born?", "Bo Lin was born in a small town by the sea."),
    ("What does Pia write?", "Poems."),
    ("Which prize did Ada Quill win?", "She won the Lantern Prize for her second novel, Grey Harbours."),
    ("Who is Bo Lin?", "A painter."),
]
TEXTS = ["Ada Quill wrote Blue Rivers.", "Bo Lin paints the sea at night, in grey and blue.", "Poems."]


@pytest.fixture(scope="module")
def tiny():
    tokenizer = train_tokenizer([q + " " + a for q, a in PAIRS] + TEXTS, vocab_size=300)
    formatter = QAFormatter(tokenizer, max_length=64, template="plain")
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(len(tokenizer), hidden_size=32, layers=2, heads=2))
    model.train()  # layer_features must switch to eval and back
    return model, formatter


def naive_features(model, ids, start, layer):
    """One example alone, no padding: mean over positions start.. of hidden_states[layer]."""
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]
    return hidden[start:].mean(dim=0).numpy()


@pytest.mark.parametrize("layer", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("pool", ["answer", "all"])
def test_batched_pair_features_equal_one_example_at_a_time(tiny, layer, pool):
    model, formatter = tiny
    feats = layer_features(model, formatter, PAIRS, layer=layer, batch_size=2, pool=pool)
    assert feats.shape == (len(PAIRS), 32) and feats.dtype == np.float32
    assert model.training
    model.eval()
    for row, (q, a) in enumerate(PAIRS):
        enc = formatter.encode(q, a)
        start = enc.prompt_length if pool == "answer" else 0
        np.testing.assert_allclose(feats[row], naive_features(model, enc.input_ids, start, layer), atol=1e-5)
    model.train()


def test_default_pool_is_answer_for_pairs_and_qa_examples_read_the_same(tiny):
    model, formatter = tiny
    examples = [QAExample(question=q, answer=a) for q, a in PAIRS]
    default = layer_features(model, formatter, examples, layer=1)
    np.testing.assert_array_equal(default, layer_features(model, formatter, PAIRS, layer=1, pool="answer"))
    assert not np.allclose(default, layer_features(model, formatter, PAIRS, layer=1, pool="all"))


def test_text_features_pool_every_token(tiny):
    model, formatter = tiny
    feats = layer_features(model, formatter, TEXTS, layer=-2, batch_size=2)
    model.eval()
    for row, text in enumerate(TEXTS):
        ids = formatter.tokenizer(text)["input_ids"]
        np.testing.assert_allclose(feats[row], naive_features(model, ids, 0, -2), atol=1e-5)
    model.train()


def test_layer_index_means_block_outputs_and_the_last_has_the_final_norm(tiny):
    model, formatter = tiny
    captured = []
    hooks = [block.register_forward_hook(lambda m, i, out: captured.append(out[0] if isinstance(out, tuple) else out))
             for block in model.model.layers]
    enc = formatter.encode(*PAIRS[0])
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([enc.input_ids]))
    for h in hooks:
        h.remove()
    block0, block1 = (t[0, enc.prompt_length :].mean(dim=0).numpy() for t in captured)
    with torch.no_grad():
        normed_last = model.model.norm(captured[1])[0, enc.prompt_length :].mean(dim=0).numpy()
    model.train()
    feats = {layer: layer_features(model, formatter, PAIRS[:1], layer=layer)[0] for layer in (1, 2, -1)}
    np.testing.assert_allclose(feats[1], block0, atol=1e-5)
    np.testing.assert_allclose(feats[2], normed_last, atol=1e-5)
    np.testing.assert_array_equal(feats[-1], feats[2])
    assert not np.allclose(feats[2], block1, atol=1e-3)


def test_feature_user_errors(tiny):
    model, formatter = tiny
    with pytest.raises(UnlearnkitError, match=r"layer 3 out of range: the model has 2 layers; use -3\.\.2"):
        layer_features(model, formatter, PAIRS, layer=3)
    with pytest.raises(UnlearnkitError, match="layer -4 out of range"):
        layer_features(model, formatter, PAIRS, layer=-4)
    with pytest.raises(UnlearnkitError, match="pool='all' for texts"):
        layer_features(model, formatter, TEXTS, layer=1, pool="answer")
    with pytest.raises(UnlearnkitError, match="mix raw texts and QA pairs"):
        layer_features(model, formatter, [TEXTS[0], PAIRS[0]], layer=1)
    with pytest.raises(UnlearnkitError, match="no examples"):
        layer_features(model, formatter, [], layer=1)
    with pytest.raises(UnlearnkitError, match="pool='answer' or pool='all'"):
        layer_features(model, formatter, PAIRS, layer=1, pool="prompt")
    assert model.training
