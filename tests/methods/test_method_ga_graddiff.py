"""GA and GradDiff against values computed one example at a time."""

import pytest

import naive_reference as naive
from unlearnkit.methods import get_method


def test_ga_is_the_negated_token_mean_nll():
    model = naive.tiny_llama()
    loss, logs = get_method("ga").loss(model, naive.forget_batch(), None)
    want = -naive.mean_nll(model, naive.forget_examples())
    assert loss.item() == pytest.approx(want, abs=1e-5)
    assert logs["forget_loss"] == pytest.approx(want, abs=1e-5)
    assert logs["forget_nll"] == pytest.approx(-want, abs=1e-5)


@pytest.mark.parametrize("forget_weight, retain_weight", [(1.0, 1.0), (0.5, 3.0)])
def test_graddiff_nll(forget_weight, retain_weight):
    model = naive.tiny_llama()
    method = get_method("graddiff", forget_weight=forget_weight, retain_weight=retain_weight)
    assert not method.needs_reference_model
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    forget = -naive.mean_nll(model, naive.forget_examples())
    retain = naive.mean_nll(model, naive.retain_examples())
    assert loss.item() == pytest.approx(forget_weight * forget + retain_weight * retain, abs=1e-5)
    assert logs["retain_loss"] == pytest.approx(retain, abs=1e-5)


def test_graddiff_kl_uses_the_reference_model():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference, scale=0.2)
    method = get_method("graddiff", retain_loss="kl")
    assert method.needs_reference_model
    method.prepare(model, [naive.forget_batch()], reference_model=reference)
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    kl = naive.retain_kl(model, reference, naive.retain_batch())
    assert logs["retain_loss"] == pytest.approx(kl, rel=1e-4, abs=1e-6)
    assert loss.item() == pytest.approx(-naive.mean_nll(model, naive.forget_examples()) + kl, abs=1e-5)


def test_graddiff_kl_without_reference_model_is_refused():
    with pytest.raises(ValueError, match="reference"):
        get_method("graddiff", retain_loss="kl").prepare(naive.tiny_llama(), [naive.forget_batch()])


def test_graddiff_gradient_flows():
    model = naive.tiny_llama()
    loss, _ = get_method("graddiff").loss(model, naive.forget_batch(), naive.retain_batch())
    loss.backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
