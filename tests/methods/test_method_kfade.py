"""K-FADE (methods/kfade.py): its Kronecker factors, its preconditioned step, its state, its stored update.

The references are worked out independently of the method, on a two-layer toy model z = W2·tanh(W1·a) applied to
each position on its own (a: a fixed embedding of the input token):

- the dense Gauss-Newton (GGN) matrix of the softmax cross-entropy, Jᵀ·(diag p − p pᵀ)·J with J the Jacobian of the
  logits with respect to each weight (``torch.func.jacrev``); for one example with one scored position its diagonal
  block for each layer is exactly A ⊗ G with G = E_{y~p}[g gᵀ] (Martens & Grosse 2015, K-FAC §3; vec row-major, so
  the block is kron(G, A)), which the sampled factors must reach within Monte-Carlo error;
- for the empirical Fisher (true labels), the outer product of the per-example weight gradient, exact;
- gradients by hand: ∂CE/∂z = p − e_y, ∂CE/∂s1 = (1 − h²) ⊙ W2ᵀ(p − e_y), ∇W = (∂CE/∂s) · inputᵀ;
- the damped K-FADE step as the dense solve (kron(G, A) + λI)⁻¹ vec ∇W (damping_form="kronecker") or
  (kron(G + λI, A + λI))⁻¹ vec ∇W (methods.md §3: ΔW = (G+λI)⁻¹ ∇W (A+λI)⁻¹), λ given or 0.1 × the mean eigenvalue.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.registry import get_method
from unlearnkit.methods.updates import (
    UPDATE_FILE,
    apply_update,
    save_update,
    weight_update,
)
from unlearnkit.models.load import load_causal_lm, save_model
from unlearnkit.models.tiny import build_tiny

VOCAB, D, H = 5, 3, 4


class Toy(nn.Module):
    """input_ids -> fixed embedding a -> fc1 -> tanh -> fc2 -> logits, every position on its own."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, D).requires_grad_(False)
        self.fc1 = nn.Linear(D, H, bias=False)
        self.fc2 = nn.Linear(H, VOCAB, bias=False)

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return SimpleNamespace(logits=self.fc2(torch.tanh(self.fc1(self.embed(input_ids)))))


def batch(pairs: list[tuple[int, int]]) -> dict:
    """Rows (x, y): the model reads x at position 0 and is scored on predicting y (one scored position per row)."""
    ids = torch.tensor([[x, y] for x, y in pairs])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.tensor([[-100, y] for _, y in pairs])}


def by_hand(model: Toy, x: int, y: int) -> dict:
    """a, h, p and the output gradients of CE(z, y) for fc1 (s1 = W1 a) and fc2 (z), written out."""
    a = model.embed.weight[x].detach().double()
    w1, w2 = model.fc1.weight.detach().double(), model.fc2.weight.detach().double()
    h = torch.tanh(w1 @ a)
    p = torch.softmax(w2 @ h, dim=0)
    dz = p - torch.nn.functional.one_hot(torch.tensor(y), VOCAB).double()
    ds1 = (1 - h ** 2) * (w2.T @ dz)
    return {"a": a, "h": h, "p": p, "g": {"fc1": ds1, "fc2": dz}, "input": {"fc1": a, "fc2": h}}


def dense_ggn_blocks(model: Toy, x: int) -> dict[str, torch.Tensor]:
    """Jᵀ (diag p − p pᵀ) J for each layer's weight (vec row-major), J = ∂z/∂vec W by autodiff."""
    a = model.embed.weight[x].detach().double()
    w1, w2 = model.fc1.weight.detach().double(), model.fc2.weight.detach().double()

    def logits(u1, u2):
        return u2 @ torch.tanh(u1 @ a)

    j1, j2 = torch.func.jacrev(logits, argnums=(0, 1))(w1, w2)
    p = torch.softmax(logits(w1, w2), dim=0)
    hessian = torch.diag(p) - torch.outer(p, p)
    return {name: j.reshape(VOCAB, -1).T @ hessian @ j.reshape(VOCAB, -1) for name, j in (("fc1", j1), ("fc2", j2))}


def kfade(**params):
    return get_method("kfade", exclude="", **params)


def test_one_example_sampled_factors_reach_the_dense_ggn_blocks():
    model = Toy()
    method = kfade(fisher="sampled", samples=3000)
    torch.manual_seed(1)
    method.add_curvature(model, batch([(3, 1)]))
    hand, dense = by_hand(model, 3, 1), dense_ggn_blocks(model, 3)
    for name, (a_factor, g_factor) in method.factors().items():
        # A is deterministic: the layer input's outer product, exactly
        torch.testing.assert_close(a_factor.double(), torch.outer(hand["input"][name], hand["input"][name]),
                                   rtol=1e-5, atol=1e-6)
        kronecker = torch.kron(g_factor.double(), a_factor.double())
        error = torch.linalg.norm(kronecker - dense[name]) / torch.linalg.norm(dense[name])
        assert error < 0.08, (name, float(error))  # Monte-Carlo error of 3000 draws (about 1/sqrt(3000) * a few)


def test_one_example_empirical_factors_are_the_gradient_outer_product():
    model = Toy()
    method = kfade(fisher="empirical")
    method.add_curvature(model, batch([(3, 1)]))
    hand = by_hand(model, 3, 1)
    for name, (a_factor, g_factor) in method.factors().items():
        gradient = torch.outer(hand["g"][name], hand["input"][name]).reshape(-1)
        torch.testing.assert_close(torch.kron(g_factor.double(), a_factor.double()), torch.outer(gradient, gradient),
                                   rtol=1e-5, atol=1e-7)


def test_several_examples_give_the_kronecker_product_of_means_not_the_mean_of_products():
    """The documented approximation: A = mean a aᵀ, G = mean g gᵀ, and A ⊗ G differs from mean (a aᵀ ⊗ g gᵀ)."""
    model = Toy()
    pairs = [(3, 1), (0, 4), (2, 2)]
    method = kfade(fisher="empirical")
    method.add_curvature(model, batch(pairs[:2]))
    method.add_curvature(model, batch(pairs[2:]))  # factors accumulate over batches
    hands = [by_hand(model, x, y) for x, y in pairs]
    for name, (a_factor, g_factor) in method.factors().items():
        a_mean = sum(torch.outer(h["input"][name], h["input"][name]) for h in hands) / 3
        g_mean = sum(torch.outer(h["g"][name], h["g"][name]) for h in hands) / 3
        torch.testing.assert_close(a_factor.double(), a_mean, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(g_factor.double(), g_mean, rtol=1e-5, atol=1e-7)
        exact = sum(torch.kron(torch.outer(h["g"][name], h["g"][name]), torch.outer(h["input"][name], h["input"][name]))
                    for h in hands) / 3
        assert not torch.allclose(torch.kron(g_mean, a_mean), exact, rtol=1e-2, atol=1e-4)


def dense_damped(g: torch.Tensor, a: torch.Tensor, damping: float | None, form: str) -> torch.Tensor:
    """The damped curvature block as a dense matrix: kron(G, A) + λI, or kron(G + λI, A + λI); λ = damping, or 0.1 ×
    the mean eigenvalue (of kron(G, A), or of each factor), from ``eigvalsh`` of the dense matrices."""
    g_outer, a_outer = torch.outer(g, g), torch.outer(a, a)
    if form == "kronecker":
        block = torch.kron(g_outer, a_outer)
        lam = 0.1 * torch.linalg.eigvalsh(block).clamp_min(0).mean() if damping is None else damping
        return block + lam * torch.eye(len(block), dtype=torch.float64)
    g_lam = 0.1 * torch.linalg.eigvalsh(g_outer).clamp_min(0).mean() if damping is None else damping
    a_lam = 0.1 * torch.linalg.eigvalsh(a_outer).clamp_min(0).mean() if damping is None else damping
    return torch.kron(g_outer + g_lam * torch.eye(len(g), dtype=torch.float64),
                      a_outer + a_lam * torch.eye(len(a), dtype=torch.float64))


@pytest.mark.parametrize("form,damping", [("kronecker", None), ("kronecker", 0.05), ("factored", None),
                                          ("factored", 0.05)])
def test_step_is_the_damped_dense_solve_and_the_loss_gradient_ascends(form, damping):
    model = Toy()
    method = kfade(fisher="empirical", damping=damping, damping_form=form, curvature_batches=1)
    retain, forget = batch([(3, 1)]), batch([(0, 4)])
    method.add_curvature(model, retain)
    nll, steps = method.direction(model, forget)
    retain_hand, forget_hand = by_hand(model, 3, 1), by_hand(model, 0, 4)
    assert nll.item() == pytest.approx(-torch.log(forget_hand["p"][4]).item(), rel=1e-5)
    for name in ("fc1", "fc2"):
        a, g = retain_hand["input"][name], retain_hand["g"][name]
        forget_gradient = torch.outer(forget_hand["g"][name], forget_hand["input"][name]).reshape(-1)
        expected = torch.linalg.solve(dense_damped(g, a, damping, form), forget_gradient).reshape(len(g), len(a))
        torch.testing.assert_close(steps[name].double(), expected, rtol=1e-4, atol=1e-6)

    # through the loop's interface: value -NLL, gradient -step (so a descent step on it ascends the forget NLL)
    for p in (model.fc1.weight, model.fc2.weight):
        p.grad = None
    loss, logs = method.loss(model, forget, retain)
    loss.backward()
    assert loss.item() == pytest.approx(-nll.item(), rel=1e-6) and logs["curvature_batches"] == 1
    for name in ("fc1", "fc2"):
        torch.testing.assert_close(getattr(model, name).weight.grad, -steps[name])
    size = 1e-4 / float(torch.sqrt(sum(getattr(model, n).weight.grad.pow(2).sum() for n in ("fc1", "fc2"))))
    with torch.no_grad():  # a small descent step on the loss (update norm 1e-4) raises the forget NLL
        for name in ("fc1", "fc2"):
            getattr(model, name).weight.sub_(size * getattr(model, name).weight.grad)
    assert method.direction(model, forget)[0].item() > nll.item()


def test_kl_budget_scales_the_step_to_the_predicted_retain_kl():
    """½ vec(ΔW)ᵀ kron(G, A) vec(ΔW) over both layers equals the budget, computed with dense Kronecker products; the
    direction is the unscaled one's."""
    model = Toy()
    retain, forget = batch([(3, 1), (1, 0)]), batch([(0, 4)])
    free, budgeted = kfade(fisher="empirical"), kfade(fisher="empirical", kl_budget=0.01)
    free.add_curvature(model, retain)
    budgeted.add_curvature(model, retain)
    unscaled, scaled = free.direction(model, forget)[1], budgeted.direction(model, forget)[1]
    quadratic = 0.0
    for name, (a_factor, g_factor) in budgeted.factors().items():
        step = scaled[name].double().reshape(-1)
        quadratic += 0.5 * float(step @ torch.kron(g_factor.double(), a_factor.double()) @ step)
        ratio = scaled[name] / unscaled[name]
        torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.flatten()[0])), rtol=1e-4, atol=0)
    assert quadratic == pytest.approx(0.01, rel=1e-4)


def test_factors_freeze_after_curvature_batches_and_survive_a_checkpoint():
    model = Toy()
    method = kfade(fisher="sampled", curvature_batches=1)
    torch.manual_seed(0)
    method.loss(model, batch([(0, 4)]), batch([(3, 1), (1, 2)]))
    before = {name: [f.clone() for f in pair] for name, pair in method.factors().items()}
    method.loss(model, batch([(0, 4)]), batch([(2, 0)]))  # a second retain batch is not added
    for name, pair in method.factors().items():
        for old, new in zip(before[name], pair):
            assert torch.equal(old, new)
    restored = kfade(fisher="sampled", curvature_batches=1)
    restored.load_state_dict(method.state_dict())
    for name, (a, g) in restored.factors().items():
        assert torch.equal(a, before[name][0]) and torch.equal(g, before[name][1])
    torch.testing.assert_close(restored.direction(model, batch([(0, 4)]))[1], method.direction(model, batch([(0, 4)]))[1])


def test_bad_patterns_are_refused():
    with pytest.raises(UnlearnkitError, match="not a regular expression"):
        get_method("kfade", modules="(")
    with pytest.raises(UnlearnkitError, match="no nn.Linear"):
        get_method("kfade", modules="nothing_like_this").trainable_parameters(Toy())


def tiny(folder, hidden_size: int = 16):
    model, tokenizer = build_tiny(["alpha beta gamma delta", "epsilon zeta eta theta"], seed=0, vocab_size=64,
                                  hidden_size=hidden_size, layers=1, heads=2)
    save_model(model, tokenizer, folder)
    return model


def test_reapply_on_a_copy_of_the_target_gives_the_unlearned_weights(tmp_path):
    target = tiny(tmp_path / "target")
    unlearned, _ = load_causal_lm(tmp_path / "target")
    generator = torch.Generator().manual_seed(0)
    changed = ["model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.weight"]
    with torch.no_grad():
        for name in changed:
            unlearned.get_parameter(name).add_(0.01 * torch.randn(unlearned.get_parameter(name).shape,
                                                                   generator=generator))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    update = weight_update(unlearned, tmp_path / "target")
    assert sorted(update) == sorted(changed)  # only what changed is stored
    save_update(update, run_dir)
    assert (run_dir / UPDATE_FILE).is_file()

    out = CliRunner().invoke(app, ["reapply", str(run_dir), "--model", str(tmp_path / "target"),
                                   "--output", str(tmp_path / "reapplied")])
    assert out.exit_code == 0, out.output
    reapplied, _ = load_causal_lm(tmp_path / "reapplied")
    for name, value in unlearned.state_dict().items():
        torch.testing.assert_close(reapplied.state_dict()[name], value, rtol=0, atol=1e-7)
    assert not torch.equal(reapplied.get_parameter(changed[0]), target.get_parameter(changed[0]))


def test_reapply_refuses_a_model_of_other_shapes(tmp_path):
    tiny(tmp_path / "target")
    other = tiny(tmp_path / "other", hidden_size=32)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_update({"model.layers.0.mlp.down_proj.weight": torch.ones(16, 16 * 4)}, run_dir)
    before = other.get_parameter("model.layers.0.mlp.down_proj.weight").clone()
    with pytest.raises(UnlearnkitError, match="has shape .* reapply needs a model of the same architecture"):
        apply_update(other, {"model.layers.0.mlp.down_proj.weight": torch.ones(16, 16 * 4)})
    assert torch.equal(other.get_parameter("model.layers.0.mlp.down_proj.weight"), before)
    out = CliRunner().invoke(app, ["reapply", str(run_dir), "--model", str(tmp_path / "other"),
                                   "--output", str(tmp_path / "out")])
    assert out.exit_code == 2 and "same architecture" in out.output and len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
