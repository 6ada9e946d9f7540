"""IAU on classifiers (``unlearnkit.classifier.iau``): Liu, Wu, Lian, Chen 2025, arXiv 2507.23257, code
Lolo1222/IAU ``IAU_unlearn.py``: one Adam step along g = ∇ mean CE(D_r) − ∇ mean CE(D_f), each set as one batch.

The references here: g from per-example gradients of one ``nn.Module`` averaged by hand, and Adam's first step
written out from Kingma & Ba 2015 (Algorithm 1); for several steps, the repository's loop itself (``loss1.backward()``,
``(-CE(forget)).backward()``, ``optimizer.step()``) on one model with ``torch.optim.Adam``. IAU forms no Hessian (the
paper replaces the influence function's H⁻¹∇ℓ by this incremental step), so none is computed here.
"""


import pytest
import torch
import torch.nn.functional as F

from unlearnkit.classifier import iau
from unlearnkit.classifier.data import retain_indices
from unlearnkit.classifier.unlearn import unlearn
from unlearnkit.errors import UnlearnkitError


@pytest.fixture(scope="module")
def setup(digits120):
    task, original, forget, cache = digits120
    return task, original, forget


def _sets(task, forget):
    x, y = torch.as_tensor(task.train.x), torch.as_tensor(task.train.y)
    return x, y, torch.as_tensor(retain_indices(task, forget)), torch.as_tensor(forget)


def mean_gradient(net, x, y, index):
    """(1/n) Σ_i ∇ CE(f(x_i), y_i), one example at a time."""
    total = {k: torch.zeros_like(p) for k, p in net.named_parameters()}
    for i in index.tolist():
        grads = torch.autograd.grad(F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]), list(net.parameters()))
        for k, g in zip(total, grads):
            total[k] += g
    return {k: v / len(index) for k, v in total.items()}


def test_one_step_is_adams_first_step_along_the_corrected_gradient(setup):
    task, original, forget = setup
    x, y, retain, forget_t = _sets(task, forget)
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
    result = unlearn(original, task, forget, "iau")
    for m in range(len(original)):
        net = original.member(m)
        g_r, g_f = mean_gradient(net, x, y, retain), mean_gradient(net, x, y, forget_t)
        got = result.member(m).state_dict()
        for k, p in net.named_parameters():
            g = g_r[k] - g_f[k]
            m_hat = (1 - b1) * g / (1 - b1)  # m_1 / (1 − β1¹), m_0 = 0
            v_hat = (1 - b2) * g * g / (1 - b2)
            expected = p.detach() - lr * m_hat / (v_hat.sqrt() + eps)
            torch.testing.assert_close(got[k], expected, rtol=1e-5, atol=1e-6, msg=k)
            moved = (got[k] - p.detach()).abs()
            assert torch.allclose(moved[g.abs() > 1e-4], torch.tensor(lr), rtol=0.02)  # ≈ lr · sign(g)


def test_each_member_equals_the_repositorys_loop_on_that_model(setup, monkeypatch):
    task, original, forget = setup
    x, y, retain, forget_t = _sets(task, forget)
    o = {"steps": 3, "lr": 5e-3, "beta1": 0.8, "beta2": 0.99, "eps": 1e-7}
    monkeypatch.setattr(iau, "CHUNK", 16)  # the full-set gradients accumulated over 7 + 2 chunks
    result = unlearn(original, task, forget, "iau", o)
    for m in range(len(original)):
        net = original.member(m)
        opt = torch.optim.Adam(net.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
        for _ in range(o["steps"]):
            opt.zero_grad()
            F.cross_entropy(net(x[retain]), y[retain]).backward()
            (-F.cross_entropy(net(x[forget_t]), y[forget_t])).backward()
            opt.step()
        got = result.member(m).state_dict()
        for k, v in net.state_dict().items():
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_the_step_lowers_retain_loss_minus_forget_loss(setup):
    task, original, forget = setup
    x, y, retain, forget_t = _sets(task, forget)

    def objective(ensemble):
        logits = ensemble.logits(task.train.x)
        return torch.stack([F.cross_entropy(logits[m, retain], y[retain]) - F.cross_entropy(logits[m, forget_t],
                            y[forget_t]) for m in range(len(ensemble))])

    after = objective(unlearn(original, task, forget, "iau", {"lr": 1e-3}))
    assert (after < objective(original)).all()


def test_bad_option_is_one_line(setup):
    task, original, forget = setup
    with pytest.raises(UnlearnkitError, match="steps must be greater than or equal to 1") as info:
        unlearn(original, task, forget, "iau", {"steps": 0})
    assert "\n" not in str(info.value)
