"""Flexora's layer search (models/flexora.py; Wei et al., ACL 2025, arXiv:2408.10774; research/methods.md §23).

The gates' gradient is checked against central finite differences of a deliberately naive validation loss (NPO and
the retain NLL written out one example at a time, tests/methods/naive_reference.py) in float64: the first-order
gradient d f(alpha, y) / d alpha, and the one-step unrolled hypergradient d f(alpha, y - xi grad_y g(alpha, y)) / d alpha
of DARTS (Liu et al., ICLR 2019), the form research/methods.md §23 gives for Flexora's search.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "methods"))
import naive_reference as naive  # noqa: E402

import unlearnkit  # noqa: E402
from unlearnkit.config import FlexoraSettings, LoraSettings, parse_config  # noqa: E402
from unlearnkit.errors import ConfigError, UnlearnkitError  # noqa: E402
from unlearnkit.methods import get_method  # noqa: E402
from unlearnkit.models.flexora import (FLEXORA_FILE, FlexoraSearch, check_request, flexora_stage,  # noqa: E402
                                       search, select_layers)
from unlearnkit.models.lora import add_lora  # noqa: E402

pytest.importorskip("peft")
BETA = 0.1  # NPO's default
LORA = LoraSettings(r=2, alpha=4, target_modules=["q_proj", "v_proj"])
FORGET, RETAIN = naive.forget_examples(), naive.retain_examples()


def gated_model(seed: int = 0):
    """A 4-block tiny Llama with LoRA (B randomised, so every factor moves) in float64."""
    model = add_lora(naive.perturbed_copy(naive.tiny_llama(), scale=0.2), LORA, seed=seed).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def new_search(model, **settings):
    values = {"val_forget": 1, "val_retain": 1, "batch_size": 2, "lora_lr": 0.5, "gate_lr": 0.05, **settings}
    found = FlexoraSearch(model, get_method("npo", beta=BETA), naive.encoded(FORGET), naive.encoded(RETAIN),
                          naive.PAD, FlexoraSettings(**values), seed=0)
    found.prepare()
    return found


def lora_parameters(model):
    return [p for n, p in model.named_parameters() if "lora_" in n]


def naive_objective(model, forget_rows, retain_rows, reference):
    """NPO (2/beta) log(1 + (pi/pi_ref)^beta) averaged over the forget rows + the retain rows' mean NLL."""
    npo = sum(-(2 / BETA) * torch.nn.functional.logsigmoid(
        -BETA * (naive.sequence_logprob_tensor(model, *FORGET[i]) - reference[i])) for i in forget_rows)
    return npo / len(forget_rows) + naive.mean_nll_tensor(model, [RETAIN[i] for i in retain_rows])


def reference_logprobs(model):
    """log pi_ref(y|x) of every forget example: the model before the search's first step (NPO's reference)."""
    with torch.no_grad():
        return [float(naive.sequence_logprob_tensor(model, *example)) for example in FORGET]


def set_values(tensors, values):
    with torch.no_grad():
        for t, v in zip(tensors, values):
            t.copy_(v)


def finite_difference(function, gates, eps=1e-3):
    """Central differences in each gate. The step is large because Llama's rotary embedding is computed in float32
    even in a float64 model (noise ~1e-6 in the loss); the truncation error is O(eps^2)."""
    start = gates.detach().clone()
    grad = torch.zeros_like(start)
    for layer in range(len(start)):
        for sign in (1, -1):
            set_values([gates], [start + sign * eps * torch.nn.functional.one_hot(torch.tensor(layer), len(start))])
            grad[layer] += sign * float(function()) / (2 * eps)
    set_values([gates], [start])
    return grad


def test_a_lower_step_leaves_the_gates_alone_and_the_upper_step_is_the_validation_gradient():
    model = gated_model()
    found = new_search(model, unroll_steps=0)
    reference = reference_logprobs(model)
    slices, gates = found.slices, found.gates.values
    before = [p.detach().clone() for p in lora_parameters(model)]
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    found.lower_step()
    assert gates.grad is None  # the training loss moved the LoRA weights only
    assert all(not torch.equal(a, p) for a, p in zip(before, lora_parameters(model)))
    assert all(torch.equal(base[n], p) for n, p in model.named_parameters() if "lora_" not in n)
    with torch.no_grad():
        expected = finite_difference(
            lambda: naive_objective(model, slices["val_forget"], slices["val_retain"], reference), gates)
    found.upper_step()
    assert expected.abs().min() > 0.02
    assert torch.allclose(gates.grad, expected, rtol=1e-3, atol=1e-3)
    # Adam's first step is lr times the sign of the gradient (m_hat / sqrt(v_hat) = g / |g|)
    assert torch.allclose(gates.detach(), 1 - 0.05 * expected.sign(), atol=1e-6)
    after_upper = gates.grad.clone()
    found.lower_step()
    assert torch.equal(gates.grad, after_upper)


def test_the_one_step_unrolled_hypergradient_goes_through_the_lower_step():
    model = gated_model(seed=1)
    found = new_search(model, unroll_steps=1)
    reference = reference_logprobs(model)
    slices, gates, xi = found.slices, found.gates.values, 0.5
    weights = lora_parameters(model)
    start = [p.detach().clone() for p in weights]

    def stepped_weights():
        set_values(weights, start)
        train = naive_objective(model, slices["train_forget"], slices["train_retain"], reference)
        return [w - xi * d for w, d in zip(start, torch.autograd.grad(train, weights))]

    def validation_after_the_step():
        set_values(weights, stepped_weights())
        with torch.no_grad():
            return naive_objective(model, slices["val_forget"], slices["val_retain"], reference)

    expected = finite_difference(validation_after_the_step, gates)
    one_step = [w.detach() for w in stepped_weights()]  # y_1 at the current gates
    set_values(weights, one_step)
    with torch.no_grad():  # the first-order gradient: y_1 held fixed
        first_order = finite_difference(
            lambda: naive_objective(model, slices["val_forget"], slices["val_retain"], reference), gates)
    set_values(weights, start)
    assert gates.grad is None
    found.upper_step()
    assert torch.allclose(gates.grad, expected, rtol=1e-3, atol=1e-3)
    assert (gates.grad - first_order).abs().max() > 0.05  # the unroll's second-order term matters here
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(weights, one_step))  # y left at y_1


def test_the_selection_is_deterministic_under_a_seed_and_follows_it():
    def record(seed):
        model = add_lora(naive.perturbed_copy(naive.tiny_llama(), scale=0.2), LORA, seed=0)
        settings = FlexoraSettings(search_steps=3, val_forget=1, val_retain=1, batch_size=2, lora_lr=0.5)
        return search(model, get_method("npo"), naive.encoded(FORGET), naive.encoded(RETAIN), naive.PAD, settings,
                      seed)

    first, again = record(0), record(0)
    assert first["layers"] == again["layers"] and first["gates"] == again["gates"]
    assert len(first["layers"]) == 2 and first["gated"] == [0, 1, 2, 3]
    others = [record(seed) for seed in (1, 3)]  # other held-out slices: other gates, here other layers
    assert all(o["gates"] != first["gates"] for o in others)
    assert len({tuple(r["layers"]) for r in [first, *others]}) > 1


def test_select_layers_top_k_and_threshold():
    gates = [0.9, 1.2, 1.2, 0.7, 1.05]
    assert select_layers(gates, range(5), FlexoraSettings(keep=2)) == [1, 2]
    assert select_layers(gates, range(5), FlexoraSettings()) == [1, 2, 4]  # half of 5, rounded up
    assert select_layers(gates, [0, 3, 4], FlexoraSettings(keep=2)) == [0, 4]  # blocks without adapters are skipped
    assert select_layers(gates, range(5), FlexoraSettings(select="threshold", threshold=1.1)) == [1, 2]
    with pytest.raises(UnlearnkitError, match=r"no gate ended above model.flexora.threshold 2 \(the largest is 1.2\): lower the threshold"):
        select_layers(gates, range(5), FlexoraSettings(select="threshold", threshold=2.0))


def adapted_blocks(model):
    return sorted({int(n.split(".layers.")[1].split(".")[0]) for n, _ in model.named_parameters() if "lora_" in n})


def test_lora_goes_on_the_selected_layers_only_with_fresh_adapters(tmp_path):
    target = naive.perturbed_copy(naive.tiny_llama(), scale=0.2)
    ids = torch.tensor([[1, 11, 12, 13, 20, 21]])
    with torch.no_grad():
        before = target(input_ids=ids).logits
    chosen = add_lora(naive.perturbed_copy(naive.tiny_llama(), scale=0.2), LoraSettings(r=2), layers=[3, 1])
    assert adapted_blocks(chosen) == [1, 3]
    names = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in chosen.named_parameters() if "lora_" in n}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # all-linear
    cfg = parse_config({"model": {"lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"],
                                           "layers": "flexora"}}, "seed": 5})
    (tmp_path / FLEXORA_FILE).write_text(json.dumps({"layers": [0, 2], "of": 4}))  # a resumed run reads it back
    model, record = flexora_stage(cfg, add_lora(target, cfg.model.lora), [], [], naive.PAD, tmp_path)
    assert record["layers"] == [0, 2] and adapted_blocks(model) == [0, 2]
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if "lora_B" in n)  # fresh: B = 0
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-6)


@pytest.mark.parametrize("model, message", [
    ({"flexora": {"search_steps": 5}}, "model.flexora selects which layers get LoRA adapters, and there is no "
                                       "model.lora block: add model.lora"),
    ({"lora": {}, "flexora": {}}, "model.flexora is set but model.lora.layers is 'all': set model.lora.layers: flexora"),
    ({"lora": {"layers": "flexora"}, "flexora": {"select": "threshold", "keep": 2}}, "remove keep, or set select: top_k"),
    ({"lora": {"layers": "some"}}, "model.lora.layers"),
    ({"lora": {"layers": "flexora"}, "flexora": {"gate_lr": 0}}, "model.flexora.gate_lr"),
])
def test_config_errors_at_load(model, message):
    with pytest.raises(ConfigError, match="^config: .*" + message.replace("(", r"\(").replace(".", r"\.")) as caught:
        parse_config({"model": model})
    assert "\n" not in str(caught.value)


def test_slices_and_selection_that_do_not_fit_the_run_are_refused():
    cfg = parse_config({"model": {"lora": {"layers": "flexora"}, "flexora": {"val_forget": 3, "keep": 9}}})
    model = add_lora(naive.tiny_llama(), LoraSettings(r=2))
    npo = get_method("npo")
    with pytest.raises(ConfigError, match="val_forget is 3 and the forget set has 3 training items.*below 3"):
        check_request(cfg, npo, model, 3, 10, 1)
    with pytest.raises(ConfigError, match="keep is 9 and the model has 4 layers: set keep to at most 4"):
        check_request(cfg, npo, model, 8, 10, 1)
    with pytest.raises(ConfigError, match="does not search with refusal answers yet"):
        check_request(cfg, get_method("idkdpo"), model, 8, 10, 1)


def test_a_flexora_run_writes_its_selection_and_unlearns_with_lora_on_it(tmp_path):
    from test_lora import SMALL

    model = {**SMALL["model"], "lora": {"r": 4, "alpha": 8, "layers": "flexora"},
             "flexora": {"search_steps": 2, "val_forget": 2, "val_retain": 2, "keep": 1}}
    config = {**SMALL, "model": model, "output_dir": str(tmp_path / "run")}
    result = unlearnkit.unlearn(config, progress=False)
    saved = json.loads((result.run_dir / FLEXORA_FILE).read_text())
    assert len(saved["layers"]) == 1 and len(saved["curve"]) == 2 and saved["slices"]["val_forget"] == 2
    assert result.results["flexora"]["layers"] == saved["layers"]
    adapter = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["layers_to_transform"] == saved["layers"]
    assert "LoRA layers (Flexora):" in (result.run_dir / "report.html").read_text()


def test_the_cli_refuses_a_flexora_block_without_lora_with_exit_2(tmp_path):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    path = tmp_path / "run.yaml"
    path.write_text("model:\n  flexora:\n    search_steps: 5\n")
    result = CliRunner().invoke(app, ["run", str(path), "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {path}: model.flexora selects which layers get LoRA adapters, and there "
                                     "is no model.lora block: add model.lora (with layers: flexora), or remove "
                                     "model.flexora")
    assert not (tmp_path / "out").exists()
