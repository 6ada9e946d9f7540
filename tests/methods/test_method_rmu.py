"""RMU: hidden-state capture, the loss against a per-example computation, trainable parameters, layer checks."""

import pytest
import torch

import naive_reference as naive
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import get_method
from unlearnkit.methods.rmu import decoder_layers, layer_output


def control_vector(seed, dim, coeff):
    u = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
    return (u / u.norm() * coeff).double()


@torch.no_grad()
def hidden(model, ids, layer):
    """Output of decoder block ``layer`` on one unpadded example: hidden_states[layer + 1]."""
    return model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer + 1][0].double()


def naive_answer_mse(h_of, target_of, examples):
    per_example = []
    for ids, labels in examples:
        h, target = h_of(ids), target_of(ids)
        positions = [t for t in range(len(ids)) if labels[t] != -100]
        per_example.append(sum(((h[t] - target[t]) ** 2).mean().item() for t in positions) / len(positions))
    return sum(per_example) / len(per_example)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_layer_output_is_the_block_output(layer):
    model = naive.tiny_llama(layers=4)
    batch = naive.retain_batch()
    with torch.no_grad():
        got = layer_output(model, decoder_layers(model)[layer], batch)
    for i, (ids, _) in enumerate(naive.retain_examples()):
        torch.testing.assert_close(got[i, : len(ids)].double(), hidden(model, ids, layer), atol=1e-5, rtol=1e-5)


def test_last_layer_output_is_taken_before_the_final_norm():
    """hidden_states[-1] has the model's final norm applied; the hook (like the reference's) sees the block output."""
    model = naive.tiny_llama(layers=4)
    batch = naive.retain_batch()
    with torch.no_grad():
        got = layer_output(model, decoder_layers(model)[3], batch)
        for i, (ids, _) in enumerate(naive.retain_examples()):
            normed = model.model.norm(got[i : i + 1, : len(ids)])[0].double()
            torch.testing.assert_close(normed, hidden(model, ids, 3), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer, coeff", [(1, 2.0), (2, 6.5)])
def test_rmu_loss_on_answer_positions(layer, coeff):
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference)
    method = get_method("rmu", layer=layer, steering_coeff=coeff, retain_weight=3.0, seed=7)
    method.prepare(model, [naive.forget_batch()], reference_model=reference)
    loss, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    c_u = control_vector(7, 16, coeff)
    forget = naive_answer_mse(lambda ids: hidden(model, ids, layer), lambda ids: c_u.expand(len(ids), 16),
                              naive.forget_examples())
    retain = naive_answer_mse(lambda ids: hidden(model, ids, layer), lambda ids: hidden(reference, ids, layer),
                              naive.retain_examples())
    assert retain > 1e-4
    assert logs["forget_loss"] == pytest.approx(forget, rel=1e-5, abs=1e-7)
    assert logs["retain_loss"] == pytest.approx(retain, rel=1e-5, abs=1e-7)
    assert loss.item() == pytest.approx(forget + 3.0 * retain, rel=1e-5, abs=1e-7)


def test_rmu_all_positions_includes_padding():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference)
    method = get_method("rmu", layer=1, positions="all", seed=3)
    method.prepare(model, [naive.forget_batch()], reference_model=reference)
    _, logs = method.loss(model, naive.forget_batch(), naive.retain_batch())
    batch = naive.forget_batch()
    c_u = control_vector(3, 16, 2.0)
    squares = []
    for i in range(batch["input_ids"].shape[0]):  # every row of the padded batch, one at a time
        with torch.no_grad():
            h = model(batch["input_ids"][i : i + 1], attention_mask=batch["attention_mask"][i : i + 1],
                      output_hidden_states=True).hidden_states[2][0].double()
        squares += [((h[t] - c_u) ** 2).mean().item() for t in range(h.shape[0])]
    assert logs["forget_loss"] == pytest.approx(sum(squares) / len(squares), abs=1e-5)


def test_control_vector_is_a_seeded_scaled_unit_vector():
    a, b, c = get_method("rmu", seed=1), get_method("rmu", seed=1), get_method("rmu", seed=2)
    assert a.control_vector(16).norm().item() == pytest.approx(2.0)
    assert (a.control_vector(16) >= 0).all()  # uniform on [0, 1) before normalising, as the reference draws it
    assert torch.equal(a.control_vector(16), b.control_vector(16))
    assert not torch.equal(a.control_vector(16), c.control_vector(16))


def test_only_down_proj_of_the_three_layers_up_to_layer_get_gradients():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference)
    method = get_method("rmu", layer=2)
    params = method.trainable_parameters(model)
    names = [n for n, p in model.named_parameters() if any(p is q for q in params)]
    assert names == [f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1, 2)]
    assert all(p.requires_grad for p in model.parameters())  # the training loop does the freezing
    for p in model.parameters():  # ... like this
        p.requires_grad_(any(p is q for q in params))
    method.prepare(model, [naive.forget_batch()], reference_model=reference)
    loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
    loss.backward()
    for name, p in model.named_parameters():
        if name in names:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert all(p.grad is None for p in reference.parameters())


def test_steering_gradient_reaches_only_layers_up_to_the_steered_one():
    reference = naive.tiny_llama()
    model = naive.perturbed_copy(reference)
    method = get_method("rmu", layer=1)
    method.prepare(model, [naive.forget_batch()], reference_model=reference)
    loss, _ = method.loss(model, naive.forget_batch(), naive.retain_batch())
    loss.backward()
    assert model.model.layers[1].mlp.down_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.model.layers[2].parameters())


def test_update_layers_clip_at_zero_and_can_be_chosen():
    model = naive.tiny_llama()
    assert get_method("rmu", layer=1).updated_layer_indices(model) == [0, 1]
    assert get_method("rmu", layer=3, update_layers=[3, 1]).updated_layer_indices(model) == [1, 3]
    with pytest.raises(UnlearnkitError, match=r"update_layers \[4\] out of range"):
        get_method("rmu", layer=3, update_layers=[4]).updated_layer_indices(model)


def test_layer_none_is_the_middle_layer():
    assert get_method("rmu", layer=None).layer_index(naive.tiny_llama(layers=4)) == 2
    assert get_method("rmu", layer=None).layer_index(naive.tiny_llama(layers=3)) == 1


def test_layer_out_of_range_is_a_user_error():
    model = naive.tiny_llama(layers=4)
    method = get_method("rmu")  # default layer 7
    message = r"layer 7 out of range: the model has 4 layers; set layer between 0 and 3"
    with pytest.raises(UnlearnkitError, match=message):
        method.prepare(model, [naive.forget_batch()], reference_model=model)
    with pytest.raises(UnlearnkitError, match=message):
        method.trainable_parameters(model)


def test_bad_positions_is_a_user_error():
    with pytest.raises(UnlearnkitError, match="positions"):
        get_method("rmu", positions="tokens")
