"""GRU: the gradient of the returned loss equals the forget gradient rectified against the running average of the
retain gradient, each gradient recomputed one example at a time (OpenUnlearning ``gru.py``: m = gamma * g_r +
(1 - gamma) * m_prev; g_f minus its projection on m when <g_f, m> < 0, arXiv:2503.09117); the update never opposes
m; and a resumed run equals an uninterrupted one (m is saved with each checkpoint)."""

import naive_reference as naive
from resume_harness import straight_and_resumed
import pytest
import torch

from unlearnkit.methods import get_method
from unlearnkit.training import TrainConfig


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads]).double()


def token_mean_nll_gradient(model, examples):
    """d/dtheta of the mean over all answer tokens of -log p, summed one unpadded example at a time."""
    total, count = 0.0, 0
    for ids, labels in examples:
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        for t in range(1, len(ids)):
            if labels[t] != -100:
                total = total - logp[t - 1, labels[t]]
                count += 1
    return flat(torch.autograd.grad(total / count, list(model.parameters())))


def rectified(g_f, m):
    dot = torch.dot(g_f, m)
    return g_f - dot / torch.dot(m, m) * m if dot < 0 else g_f


def returned_gradient(method, model, forget_rows=None, retain=None):
    retain_batch = naive.retain_batch() if retain is None else naive.collate(retain)
    loss, logs = method.loss(model, naive.forget_batch(forget_rows), retain_batch)
    return flat(torch.autograd.grad(loss, list(model.parameters()))), loss, logs


def test_gradient_is_the_rectified_forget_gradient_with_the_running_average():
    model = naive.tiny_llama()
    method = get_method("gru", gamma_gru=0.8)
    method.prepare(model, [naive.forget_batch()])
    # a retain set that shares one forget answer: its NLL gradient conflicts with gradient ascent on the forget set
    retain = [naive.forget_examples()[0], naive.retain_examples()[0]]
    rectified_calls = 0
    previous = torch.zeros(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    for call, rows in enumerate(([0, 1, 2], [2, 0])):
        forget = [naive.forget_examples()[i] for i in rows]
        g_f = -token_mean_nll_gradient(model, forget)  # gradient ascent: -meanNLL
        m = 0.8 * token_mean_nll_gradient(model, retain) + 0.2 * previous
        got, loss, logs = returned_gradient(method, model, rows, retain)
        want = rectified(g_f, m)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-7)
        assert torch.dot(got, m) >= -1e-6 * got.norm() * m.norm()  # never opposes the retain direction
        assert loss.item() == pytest.approx(-naive.mean_nll(model, forget), abs=1e-5)  # the value: the forget loss
        rectified_calls += logs["rectified"] == 1.0
        previous = m
        with torch.no_grad():  # move the weights, as an optimizer step would
            for p in model.parameters():
                p.add_(1e-2 * torch.randn_like(p))
    assert rectified_calls == 2  # the case that matters was exercised


def test_no_conflict_leaves_the_forget_gradient_and_full_conflict_cancels_it():
    # gamma_gru = 0: m is the saved average alone; set it along +g_f (no conflict) or -g_f (cancelled)
    model = naive.memorised()
    g_f = -token_mean_nll_gradient(model, naive.forget_examples())
    for sign, want in ((1.0, g_f), (-1.0, torch.zeros_like(g_f))):
        method = get_method("gru", gamma_gru=0.0)
        method.prepare(model, [naive.forget_batch()])
        average, start = {}, 0
        for name, p in model.named_parameters():
            average["retain_gradient_average." + name] = (sign * g_f[start:start + p.numel()]).reshape(p.shape).float()
            start += p.numel()
        method.load_state_dict({"updates": 3, **average})
        got, _, logs = returned_gradient(method, model)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
        assert logs["rectified"] == (1.0 if sign < 0 else 0.0)


def test_npo_forget_objective():
    reference = naive.memorised()
    model = naive.perturbed_copy(reference, scale=0.1)
    method = get_method("gru", forget_loss="npo", beta=0.1)
    method.prepare(reference, [naive.forget_batch()])
    loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
    terms = []
    for ids, labels in naive.forget_examples():
        ratio = naive.sequence_logprob(model, ids, labels) - naive.sequence_logprob(reference, ids, labels)
        terms.append(-(2 / 0.1) * naive.log_sigmoid(-0.1 * ratio))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), abs=1e-5)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    config = TrainConfig(epochs=2, batch_size=2, learning_rate=1e-2, warmup_steps=0, seed=3)

    def checkpointed(folder):  # call 3 is the first step of epoch 2, after checkpoint epoch-1
        assert (folder / "checkpoints" / "epoch-1" / "method_state.safetensors").is_file()

    full, straight, result, resumed = straight_and_resumed("gru", {"gamma_gru": 0.5}, config, 3, tmp_path,
                                                           after_stop=checkpointed)
    assert [r["loss"] for r in result.logs] == [r["loss"] for r in full.logs]
    for a, b in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(a, b)
