"""GUARD-IT (research/methods.md §9; arXiv:2605.12765, the official README): steering vectors against a naive
recomputation, the norm-preserving redirection, bit-identical logits below the routing threshold, the artifact
through a run directory, the quantization attack on the steered model, and the inference kind in the pipeline.

The naive side computes each example alone, unpadded, from Hugging Face's ``hidden_states[layer + 1]`` (the output
of decoder block ``layer``), with explicit loops; it never calls the method's helpers.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import naive_reference as naive
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import installed_transform, weights_only
from unlearnkit.methods.registry import get_method
from unlearnkit.models.unlearned import load_unlearned, save_artifact, save_unlearned

LAYER = 1


def fitted(model, **params):
    method = get_method("guard_it", **{"layers": [LAYER], **params})
    artifact, logs = method.fit(model, naive.encoded(naive.forget_examples()), naive.encoded(naive.retain_examples()),
                                naive.PAD)
    return method, artifact, logs


@torch.no_grad()
def naive_means(model, examples, layer):
    """Per example the mean of block ``layer``'s output over its tokens after the shared opening (every example of
    naive_reference starts with token 1 and no two share their second: an opening of one token); and the per-token
    norms (all tokens)."""
    means, norms = [], []
    for ids, _ in examples:
        h = naive.block_output(model, ids, layer)
        means.append(sum(h[t] for t in range(1, len(ids))) / (len(ids) - 1))
        norms += [float(h[t].norm()) for t in range(len(ids))]
    return means, norms


@pytest.mark.parametrize("vector", ["diff_means", "orthogonal", "orth_diff_means"])
def test_steering_vector_equals_a_naive_recomputation(vector):
    """One cluster: v = f − r (diff_means), f ⊥ r (orthogonal), (f − r) ⊥ r (orth_diff_means), scaled to the mean
    per-token activation norm over both corpora (README: sv_scaling activation_norm)."""
    model = naive.memorised()
    _, artifact, logs = fitted(model, vector=vector, n_clusters=1, threshold=0.5)
    forget, norms_f = naive_means(model, naive.forget_examples(), LAYER)
    retain, norms_r = naive_means(model, naive.retain_examples(), LAYER)
    f = sum(forget) / len(forget)
    r = sum(retain) / len(retain)
    r_hat = r / r.norm()
    v = f - r if vector != "orthogonal" else f
    if vector != "diff_means":
        v = v - (v @ r_hat) * r_hat
    scale = sum(norms_f + norms_r) / len(norms_f + norms_r)
    expected = v / v.norm() * scale
    assert artifact["vectors"].shape == (1, 1, model.config.hidden_size)
    torch.testing.assert_close(artifact["vectors"][0, 0].double(), expected, rtol=1e-5, atol=1e-6)
    # the router: centred on the retain mean, the cluster's centroid is the normalised mean centred forget mean
    torch.testing.assert_close(artifact["center"].double(), r, rtol=1e-5, atol=1e-6)
    centred = sum(m - r for m in forget) / len(forget)
    torch.testing.assert_close(artifact["centroids"][0].double(), centred / centred.norm(), rtol=1e-5, atol=1e-6)
    assert logs["clusters"] == 1 and logs["threshold"] == 0.5 and logs["shared_opening"] == 1
    assert float(artifact["coeff"]) == pytest.approx(-0.3)


def test_auto_clusters_and_threshold():
    """k by the silhouette (k ≤ n − 1 = 2 for three forget examples); the auto threshold (Youden's J on the fit
    data's per-position router scores, raised above the shared opening's score) routes at least as large a share of
    forget as of retain positions, and never the opening."""
    method, artifact, logs = fitted(naive.memorised())
    assert logs["clusters"] == 2 and artifact["centroids"].shape[0] == 2
    torch.testing.assert_close(artifact["centroids"].norm(dim=-1), torch.ones(2))
    assert -1 <= logs["threshold"] <= 1 and logs["threshold"] > logs["opening_score"]
    assert logs["routed_forget_positions"] >= logs["routed_retain_positions"]


def test_youden_threshold_against_brute_force():
    from unlearnkit.methods.guard_it import youden_threshold

    torch.manual_seed(0)
    positive, negative = torch.randn(40) + 1.0, torch.randn(60)
    best = max(positive.tolist(), key=lambda t: (sum(p >= t for p in positive.tolist()) / 40
                                                 - sum(n >= t for n in negative.tolist()) / 60, -t))
    j = lambda t: float((positive >= t).float().mean() - (negative >= t).float().mean())  # noqa: E731
    assert j(youden_threshold(positive, negative)) == pytest.approx(j(best))


def test_redirection_preserves_the_hidden_state_norm():
    """With every position routed (threshold −1), the steered block output has the norm of the unsteered one at
    every position, and the direction of h + coeff·v; without rotation_only it is h + coeff·v itself."""
    model = naive.memorised()
    ids = torch.tensor([naive.forget_examples()[0][0]])
    for rotation_only in (True, False):
        method, artifact, _ = fitted(model, n_clusters=1, threshold=-1.0, coeff=-0.8, rotation_only=rotation_only)
        seen = []
        with torch.no_grad():
            before = naive.block_output(model, ids[0].tolist(), LAYER)
            steered = method.apply(copy.deepcopy(model), artifact)
            # a hook registered after the steering's sees the block's steered output
            steered.model.layers[LAYER].register_forward_hook(lambda m, a, out: seen.append(out))
            steered(ids)
        after = (seen[0][0] if isinstance(seen[0], tuple) else seen[0])[0].double()
        v = artifact["vectors"][0, 0].double()
        for t in range(ids.shape[1]):
            moved = before[t] - 0.8 * v
            if rotation_only:
                assert after[t].norm().item() == pytest.approx(before[t].norm().item(), rel=1e-5)
                torch.testing.assert_close(after[t], moved / moved.norm() * before[t].norm(), rtol=1e-5, atol=1e-6)
            else:
                torch.testing.assert_close(after[t], moved, rtol=1e-5, atol=1e-6)
        assert (after - before).abs().max() > 1e-3  # it did steer


def test_prompts_below_the_threshold_give_bit_identical_logits():
    """The router's score of a position, naively: cos(h_t − center, centroid) of block LAYER's output. With the
    threshold the fit chose (above the shared opening's score), a prompt none of whose positions reaches it gives
    the very same logits as the untouched model; one that does is steered."""
    model = naive.memorised()
    method, artifact, logs = fitted(model, n_clusters=1)
    threshold = float(artifact["threshold"])
    assert threshold > logs["opening_score"]
    steered = method.apply(copy.deepcopy(model), artifact)
    below = above = 0
    with torch.no_grad():
        for ids, _ in naive.retain_examples() + naive.forget_examples():
            h = naive.block_output(model, ids, LAYER)
            scores = [float(torch.nn.functional.cosine_similarity(h[t] - artifact["center"].double(),
                                                                  artifact["centroids"][0].double(), dim=0))
                      for t in range(len(ids))]
            assert scores[0] < threshold  # the shared opening (token 1) is never routed
            score = max(scores[1:])
            if abs(score - threshold) < 1e-4:
                continue  # too close to call between float32 and float64
            x = torch.tensor([ids])
            if score < threshold:
                below += 1
                assert torch.equal(steered(x).logits, model(x).logits)
            else:
                above += 1
                assert not torch.equal(steered(x).logits, model(x).logits)
    assert below and above  # both branches were exercised


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(UnlearnkitError, match="sentence_embedding.*use router: hidden_state"):
        get_method("guard_it", router="sentence_embedding")
    with pytest.raises(UnlearnkitError, match="threshold: must be between -1 and 1"):
        get_method("guard_it", threshold=1.5)
    with pytest.raises(UnlearnkitError, match="n_clusters: must be >= 1"):
        get_method("guard_it", n_clusters=0)
    with pytest.raises(UnlearnkitError, match=r"layers \[9\] out of range: the model has 4"):
        fitted(naive.tiny_llama(), layers=[9])
    with pytest.raises(TypeError, match="inference-time"):
        get_method("guard_it").loss(None, {}, None)


# ------------------------------------------------------------------------------ the run directory, quantization

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny Llama (widths 64/128: bitsandbytes' CPU 4-bit needs multiples of 64) with a trained tokenizer, saved."""
    from unlearnkit.models.load import save_model
    from unlearnkit.models.tiny import train_tokenizer

    texts = ["Who wrote The Glass Orchard? Mira Solen wrote it.", "Where was Mira Solen born? In Oslo.",
             "Who wrote Salt Roads? Ivo Brand wrote it.", "What prize did Ivo Brand win? The Harbor Prize."]
    tokenizer = train_tokenizer(texts, vocab_size=200)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0)
    folder = tmp_path_factory.mktemp("target")
    save_model(LlamaForCausalLM(config).eval(), tokenizer, folder)
    formatter = QAFormatter(tokenizer, max_length=64, template="plain")
    forget = [formatter.encode(q, a) for q, a in (("Who wrote The Glass Orchard?", "Mira Solen wrote it."),
                                                   ("Where was Mira Solen born?", "In Oslo."))]
    retain = [formatter.encode(q, a) for q, a in (("Who wrote Salt Roads?", "Ivo Brand wrote it."),
                                                   ("What prize did Ivo Brand win?", "The Harbor Prize."))]
    return folder, formatter, forget, retain


def steered_run(saved_model, tmp_path, **params):
    """A run directory as the pipeline leaves it for GUARD-IT: model/ (the unchanged weights) and inference/."""
    from unlearnkit.models.load import load_causal_lm

    folder, formatter, forget, retain = saved_model
    model, tokenizer = load_causal_lm(folder)
    method = get_method("guard_it", **{"layers": [0], "n_clusters": 1, "threshold": -1.0, **params})
    artifact, logs = method.fit(model, forget, retain, formatter.pad_token_id)
    method.apply(model, artifact)
    save_unlearned(model, tokenizer, tmp_path)
    save_artifact(tmp_path, method, artifact, logs)
    return model, method, artifact


def test_the_artifact_round_trips_through_the_run_directory(saved_model, tmp_path):
    from safetensors.torch import load_file

    model, method, artifact = steered_run(saved_model, tmp_path)
    target = load_file(saved_model[0] / "model.safetensors")
    kept = load_file(tmp_path / "model" / "model.safetensors")
    assert kept.keys() == target.keys() and all(torch.equal(kept[k], target[k]) for k in kept)  # weights unchanged
    info = json.loads((tmp_path / "inference" / "artifact.json").read_text())
    assert info["method"] == "guard_it" and info["params"] == method.params() and info["fit"]["clusters"] == 1
    loaded, _ = load_unlearned(tmp_path)
    assert all(torch.equal(installed_transform(loaded).artifact()[k], artifact[k]) for k in artifact)
    ids = torch.tensor([saved_model[2][0].input_ids])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    # a deep copy (the relearning attack's) carries hooks bound to its own transform, not to the original's
    copied = copy.deepcopy(loaded)
    installed_transform(copied).coeff.fill_(0.0)  # the copy stops steering; the original must not
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
        assert not torch.equal(copied(ids).logits, model(ids).logits)
    # the steered model's state (its fingerprint) differs from its weights' alone
    assert set(loaded.state_dict()) - set(weights_only(loaded)) == {f"unlearnkit_inference.{k}" for k in artifact}


def test_quantization_attack_quantizes_the_weights_then_steers(saved_model, tmp_path):
    pytest.importorskip("bitsandbytes")
    from unlearnkit.attacks.quantize import quantize_attack, quantize_model
    from unlearnkit.config import EvalConfig
    from unlearnkit.data.types import QAExample, Task
    from unlearnkit.evaluation.evaluator import Evaluator
    from unlearnkit.models.load import load_causal_lm

    _, method, artifact = steered_run(saved_model, tmp_path)
    steered, _ = load_unlearned(tmp_path)
    plain, _ = load_causal_lm(saved_model[0])
    quantized = quantize_model(steered, "int8")
    expected = method.apply(quantize_model(plain, "int8"), artifact)  # quantize the weights, then apply by hand
    unsteered = quantize_model(plain, "int8")
    ids = torch.tensor([saved_model[2][0].input_ids])
    with torch.no_grad():
        assert torch.equal(quantized(ids).logits, expected(ids).logits)
        assert not torch.equal(quantized(ids).logits, unsteered(ids).logits)
    formatter = saved_model[1]
    forget = [QAExample("Who wrote The Glass Orchard?", "Mira Solen wrote it.", paraphrased_answer="By Mira Solen.",
                        perturbed_answers=("Ivo Brand wrote it.",))]
    task = Task(name="tiny-guard-it", forget=forget, retain=forget, eval_forget=forget, eval_retain=forget)
    evaluator = Evaluator(task, formatter, EvalConfig(max_new_tokens=4), store=False, progress=False)
    metrics = {"forget_Q_A_Prob", "retain_Q_A_Prob"}
    results = quantize_attack(steered, evaluator, schemes=("int8",), metrics=metrics)
    plain_results = quantize_attack(plain, evaluator, schemes=("int8",), metrics=metrics)
    assert list(results) == ["full", "int8"]
    for scheme in ("full", "int8"):  # the steering acts in both precisions
        assert results[scheme].result.aggregates["forget_Q_A_Prob"] != plain_results[scheme].result.aggregates[
            "forget_Q_A_Prob"]


# ------------------------------------------------------------------------------ a whole run

RUN = {
    "task": {"source": "synthetic", "options": {"n_people": 8, "forget_people": 2, "holdout_people": 2}},
    "model": {"base": "tiny", "max_length": 96},
    "prepare": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "weight_decay": 0.0, "warmup_steps": 5},
    "method": {"name": "guard_it"},
    "eval": {"batch_size": 32, "max_new_tokens": 12},
}  # tests/pipeline/test_run.py's task, models and evaluation: a suite run prepares and evaluates them once


def test_a_run_fits_instead_of_training_and_the_quantization_attack_runs_on_it(tmp_path):
    """The pipeline's inference branch: no training step, the artifact in inference/, model/ holding the target's
    weights unchanged, the unlearned evaluation that of the steered model (not the target's cached one: the
    fingerprint includes the artifact), and the quantization attack on the steered model."""
    pytest.importorskip("bitsandbytes")
    import unlearnkit
    from safetensors.torch import load_file

    # coeff -0.8: the strongest of the README's sweep; at the default -0.3 this under-trained target's forget
    # Q_A_Prob falls by only 0.4% (0.02283 -> 0.02273), too thin a margin to test across platforms
    cfg = {**RUN, "output_dir": str(tmp_path / "run"), "method": {"name": "guard_it", "params": {"coeff": -0.8}},
           "attacks": {"run": ["quantize"], "quantize": {"schemes": ["int8"]},
                       "metrics": ["forget_Q_A_Prob", "model_utility"]}}
    result = unlearnkit.unlearn(cfg, progress=False)
    run_dir = result.run_dir
    assert sorted(p.name for p in (run_dir / "inference").iterdir()) == ["artifact.json", "artifact.safetensors"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["training"]["steps"] == 0 and results["training"]["logs"][0]["fit"]["clusters"] >= 1
    audit = json.loads((run_dir / "audit.json").read_text())
    assert sorted(audit["models"]["inference"]["weights"]) == ["artifact.json", "artifact.safetensors"]
    from unlearnkit.audit import check_hashes

    assert check_hashes(run_dir, audit) == []
    target = load_file(audit["models"]["target"]["path"] + "/model.safetensors")
    kept = load_file(run_dir / "model" / "model.safetensors")
    assert kept.keys() == target.keys() and all(torch.equal(kept[k], target[k]) for k in kept)
    models = results["models"]
    forget = {who: models[who]["aggregates"]["forget_Q_A_Prob"] for who in ("unlearned", "target")}
    assert forget["unlearned"] < forget["target"], forget
    artifact = run_dir / "inference" / "artifact.json"  # the artifact is in the audit record: a change is found
    artifact.write_text(artifact.read_text() + " ")
    assert [line for line in check_hashes(run_dir, audit) if "artifact.json" in line]
    quantized = results["robustness"]["quantize"]
    assert quantized["unlearned"]["int8"]["aggregates"]["forget_Q_A_Prob"] < \
        quantized["target"]["int8"]["aggregates"]["forget_Q_A_Prob"]


def test_training_only_settings_are_refused_before_anything_is_written(tmp_path):
    import unlearnkit

    cfg = {**RUN, "output_dir": str(tmp_path / "run"), "model": {**RUN["model"], "lora": {"r": 4}}}
    with pytest.raises(UnlearnkitError, match="'guard_it' changes no weight.*model.lora"):
        unlearnkit.unlearn(cfg, progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()
