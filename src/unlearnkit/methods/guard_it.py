"""GUARD-IT: inference-time unlearning by gated, norm-preserving redirection of the residual stream.

Paper: "GUARD-IT: Inference-Time Unlearning via Gated Activation Redirection" (arXiv:2605.12765); what is known of
it comes from the official README and the abstract (research/methods.md §9). No weight changes: a forward pass over
the forget and retain data builds steering vectors, and at inference a router decides which positions are steered.

**Fit** (one forward pass over the forget and retain training items, plus one more for ``threshold: auto``). With
h_l(x) the output of decoder layer l (the residual stream after that block, as RMU's hook reads it) and, per
example, its mean over the example's tokens (the README's ``token_position: mean``):

- the forget examples' means at the first steered layer L0, minus the retain examples' mean r_L0 and normalised,
  are clustered by K-means (scikit-learn; ``n_clusters: auto`` picks k in [2, 20] by the silhouette score, as the
  README says; a fixed int is also accepted);
- per cluster k and steered layer l, with f_k the cluster's mean forget activation and r the retain mean:
  ``diff_means``: v = f_k − r; ``orthogonal``: v = f_k − (f_k·r̂) r̂ (the forget mean perpendicular to the retain
  mean); ``orth_diff_means``: d = f_k − r, v = d − (d·r̂) r̂. Each v is then scaled to the mean per-token norm of
  the layer's activations over both corpora (``sv_scaling: activation_norm``).

**Inference.** At every position t, with s_t = h_L0,t − r_L0 (the model's own hidden state, centred on the retain
mean), the router takes the cluster k* = argmax_k cos(s_t, c_k) (c_k: cluster k's mean of the centred forget
means) and steers the position when that cosine is at least the threshold; otherwise the position's hidden state is
left exactly as it was (a prompt no position of which passes the threshold gives bit-identical logits). A steered
position's state at each steered layer becomes, with ``rotation_only`` (the README's default),
``h' = ‖h‖ · (h + coeff·v_k*) / ‖h + coeff·v_k*‖`` (a rotation: ‖h'‖ = ‖h‖; the README names the flag, the formula is
our reconstruction, methods.md §9 [inferred]), else ``h' = h + coeff·v_k*``.

Choices where the paper's router cannot be followed, and why:

- **Router input.** The paper embeds the prompt with a sentence-embedding model (MiniLM) and compares it with each
  cluster's text centroid. The default router here is the model's own hidden state (``router: hidden_state``);
  ``router: sentence_embedding`` is refused with a one-line error, since no sentence-embedding model can be
  loaded offline here (sentence-transformers is not a dependency) and the model's forward sees token ids, not text.
- **Per position, not per prompt.** The toolkit scores and generates with KV caches: shared prompt prefixes run
  once, answers continue from them, and continuous batching adds rows mid-decoding, so one forward call often sees
  only part of a sequence. A decision from position t's own state at layer L0 (which attends to everything before
  it) is causal and the same whether a sequence runs whole or in pieces; a per-prompt mean would not be.
- **Threshold.** The README's 0.55 is a MiniLM cosine and means nothing in another space. ``threshold: auto``
  (default) picks, on the fit data, the value that best separates the positions that predict forget answer tokens
  from those that predict retain answer tokens (the largest true-positive minus false-positive rate, Youden's J);
  a number fixes it.
- **The shared opening.** The tokens every fit example starts with (BOS, a chat template's system prompt) have the
  same states in every prompt: they are left out of the example means, and ``threshold: auto`` is raised above
  their router score when needed (routing them would steer every prompt alike). A fixed threshold is taken as
  given; the fit logs the opening's score.
- **Layers.** The README's TOFU setting steers layer 4 of Llama-3.2-1B's 16 (MUSE: layer 8); ``layers: null``
  takes ``num_layers // 4``. The router reads the first steered layer.
- ``coeff`` −0.3 is the README's example (its sweep: −0.8, −0.3, −0.15, 0); the README gives no default vector
  method: ``orth_diff_means`` is chosen (it removes the part of the direction shared with everything the retain
  data activates).

Cost: fit, one forward pass over the forget and retain items (two with ``threshold: auto``) and K-means on the
forget means; inference, one hook per steered layer (a [T, K] cosine at L0 and a normalisation at each steered
position). Continual unlearning (adding clusters for a new forget set) is not built.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, field_validator
from torch import nn

from unlearnkit.data.formatting import IGNORE_INDEX, collate
from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.methods.base import InferenceMethod, InferenceTransform
from unlearnkit.methods.params import MethodParams
from unlearnkit.methods.registry import register
from unlearnkit.methods.rmu import decoder_layers

MAX_AUTO_CLUSTERS = 20


def steering_vectors(forget_means: torch.Tensor, retain_mean: torch.Tensor, labels: torch.Tensor, clusters: int,
                     vector: str) -> torch.Tensor:
    """[K, d]: the unscaled steering vector of each cluster (see the module docstring), from the forget examples'
    mean activations [n, d], the retain mean [d] and each forget example's cluster ``labels`` [n]."""
    unit_retain = F.normalize(retain_mean, dim=0)
    out = []
    for k in range(clusters):
        f = forget_means[labels == k].mean(dim=0)
        v = f - retain_mean if vector in ("diff_means", "orth_diff_means") else f
        if vector in ("orthogonal", "orth_diff_means"):
            v = v - (v @ unit_retain) * unit_retain
        out.append(v)
    return torch.stack(out)


def redirect(hidden: torch.Tensor, vectors: torch.Tensor, coeff: float, rotation_only: bool) -> torch.Tensor:
    """``h + coeff·v``, rescaled to ‖h‖ per position when ``rotation_only`` (computed in float32)."""
    h = hidden.float()
    moved = h + coeff * vectors.float()
    if rotation_only:
        moved = moved * (h.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    return moved.to(hidden.dtype)


def shared_opening(sequences: list[list[int]]) -> int:
    """The length of the token prefix every sequence starts with (e.g. BOS, a chat template's opening), at most the
    shortest length minus one."""
    shortest = min(len(seq) for seq in sequences)
    length = 0
    while length < shortest - 1 and all(seq[length] == sequences[0][length] for seq in sequences):
        length += 1
    return length


def youden_threshold(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """The score t (one of ``positive``'s) maximising P(positive ≥ t) − P(negative ≥ t)."""
    pos, _ = positive.double().sort()
    neg, _ = negative.double().sort()
    candidates = pos.unique()
    tpr = 1 - torch.searchsorted(pos, candidates, right=False).double() / len(pos)
    fpr = 1 - torch.searchsorted(neg, candidates, right=False).double() / max(len(neg), 1)
    return float(candidates[int(torch.argmax(tpr - fpr))])


class GuardItTransform(InferenceTransform):
    """The installed GUARD-IT steering: buffers ``layers`` [L], ``vectors`` [L, K, d], ``centroids`` [K, d] (unit),
    ``center`` [d], ``threshold``, ``coeff``, ``rotation_only`` (0-d); hooks on each steered decoder layer."""

    def __init__(self, layers: torch.Tensor, vectors: torch.Tensor, centroids: torch.Tensor, center: torch.Tensor,
                 threshold: torch.Tensor, coeff: torch.Tensor, rotation_only: torch.Tensor):
        super().__init__()
        for name, value in (("layers", layers), ("vectors", vectors), ("centroids", centroids), ("center", center),
                            ("threshold", threshold), ("coeff", coeff), ("rotation_only", rotation_only)):
            self.register_buffer(name, value.clone())
        self._route: tuple[torch.Tensor, torch.Tensor] | None = None

    def route(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate [B, T] bool, cluster [B, T] long) from the router layer's output."""
        scores = F.normalize(hidden.float() - self.center, dim=-1) @ self.centroids.T
        best, cluster = scores.max(dim=-1)
        return best >= self.threshold, cluster

    def steer(self, index: int, module: nn.Module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if index == 0:  # the router layer runs first in every forward: decide here, before steering
            self._route = self.route(hidden)
        gate, cluster = self._route
        if not bool(gate.any()):
            return None  # nothing steered: the output stays the very same tensor
        moved = redirect(hidden, self.vectors[index][cluster], float(self.coeff), bool(self.rotation_only))
        steered = torch.where(gate[..., None], moved, hidden)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    def hooks(self, model: nn.Module) -> list[tuple[nn.Module, Any]]:
        layers = decoder_layers(model)
        return [(layers[int(layer)], functools.partial(self.steer, i)) for i, layer in enumerate(self.layers)]


@register
class GuardIt(InferenceMethod):
    """Per-cluster steering vectors, routed per position by the model's own hidden state; no weight changes."""

    name = "guard_it"
    summary = ("Inference-time: steer the residual stream away from forget clusters where a router matches them; "
               "no weight updates.")
    citation = "GUARD-IT: Inference-Time Unlearning via Gated Activation Redirection, 2026, arXiv:2605.12765"
    uses_retain = True
    alters_activations = True

    class Params(MethodParams):
        layers: list[NonNegativeInt] | None = Field(
            None, min_length=1, description="decoder layers whose output is steered; the first one also routes "
                                            "(null: num_layers // 4, the README's layer 4 of 16 for TOFU)")
        vector: Literal["orthogonal", "diff_means", "orth_diff_means"] = Field(
            "orth_diff_means", description="steering vector per cluster: forget mean ⊥ retain mean, forget − retain "
                                           "mean, or that difference ⊥ the retain mean")
        coeff: float = Field(-0.3, description="steering coefficient (README example -0.3; sweep -0.8, -0.3, -0.15, 0)")
        rotation_only: bool = Field(True, description="rescale the steered state to its original norm (a rotation)")
        n_clusters: int | Literal["auto"] = Field(
            "auto", description="forget clusters (K-means): a number >= 1, or 'auto' (silhouette, k in 2..20)")
        threshold: float | Literal["auto"] = Field(
            "auto", description="router cosine above which a position is steered, in [-1, 1], or 'auto' (the best "
                                "separation of forget from retain answer positions on the fit data)")
        router: Literal["hidden_state", "sentence_embedding"] = Field(
            "hidden_state", description="what routes: the model's own hidden state at the first steered layer "
                                        "('sentence_embedding', the paper's MiniLM router, is not available offline)")
        batch_size: int = Field(8, ge=1, description="examples per forward pass while fitting")
        seed: int = Field(0, description="seed of K-means")

        @field_validator("n_clusters")
        @classmethod
        def _clusters(cls, value):
            if value != "auto" and value < 1:
                raise ValueError("must be >= 1 or 'auto'")
            return value

        @field_validator("threshold")
        @classmethod
        def _threshold(cls, value):
            if value != "auto" and not -1.0 <= value <= 1.0:
                raise ValueError("must be between -1 and 1 (a cosine) or 'auto'")
            return value

    def __init__(self, **values):
        super().__init__(**values)
        if self.router == "sentence_embedding":
            raise ConfigError("guard_it router 'sentence_embedding' needs a sentence-embedding model (MiniLM) on this "
                              "machine, and none can be loaded offline here (sentence-transformers is not installed): "
                              "use router: hidden_state")

    def layer_indices(self, model: nn.Module) -> list[int]:
        count = len(decoder_layers(model))
        chosen = sorted(set(self.layers)) if self.layers is not None else [count // 4]
        bad = [i for i in chosen if i >= count]
        if bad:
            raise UnlearnkitError(f"guard_it layers {bad} out of range: the model has {count} decoder layers "
                                  f"(0 to {count - 1}); set method.params.layers")
        return chosen

    @torch.no_grad()
    def _activations(self, model: nn.Module, items: list, pad_token_id: int, layers: list[int], opening: int,
                     transform: GuardItTransform | None = None):
        """Per example, the mean of each layer's output over its tokens after the first ``opening`` ([n, d] per
        layer), the sum of the per-token norms per layer and the token count; with ``transform``, instead the
        router's best cosine at every position that predicts a labelled token (a flat tensor) and the highest one
        over the opening's positions (-inf without an opening)."""
        blocks = decoder_layers(model)
        captured: dict[int, torch.Tensor] = {}
        handles = [blocks[l].register_forward_hook(
            lambda m, a, out, l=l: captured.__setitem__(l, (out[0] if isinstance(out, tuple) else out).detach()))
            for l in layers]
        device = next(model.parameters()).device
        means: dict[int, list] = {l: [] for l in layers}
        norm_sum, norm_count, scores, opening_best = {l: 0.0 for l in layers}, 0, [], float("-inf")
        try:
            for start in range(0, len(items), self.batch_size):
                batch = collate(items[start:start + self.batch_size], pad_token_id, "right")
                mask = batch["attention_mask"].to(device)
                model(input_ids=batch["input_ids"].to(device), attention_mask=mask)
                real = mask.bool()
                if transform is not None:
                    hidden = captured[layers[0]]
                    best = (F.normalize(hidden.float() - transform.center, dim=-1) @ transform.centroids.T).amax(-1)
                    predicts = batch["labels"][:, 1:].to(device) != IGNORE_INDEX
                    scores.append(best[:, :-1][predicts].cpu())
                    if opening:
                        opening_best = max(opening_best, float(best[:, :opening].max()))
                    continue
                kept = mask.clone()
                kept[:, :opening] = 0  # the opening every example shares says nothing about the example
                weights = kept.float() / kept.sum(dim=1, keepdim=True)
                for l in layers:
                    h = captured[l].float()
                    means[l].append(torch.einsum("bt,btd->bd", weights, h).cpu())
                    norm_sum[l] += float(h.norm(dim=-1)[real].sum())
                norm_count += int(real.sum())
        finally:
            for handle in handles:
                handle.remove()
        if transform is not None:
            return torch.cat(scores), opening_best
        return {l: torch.cat(means[l]) for l in layers}, norm_sum, norm_count

    def _cluster(self, points: torch.Tensor) -> tuple[torch.Tensor, int]:
        """K-means labels of ``points`` [n, d] and the number of clusters (``n_clusters`` or the silhouette's)."""
        n = len(points)
        if n < 2 or self.n_clusters == 1:
            return torch.zeros(n, dtype=torch.long), 1
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        from threadpoolctl import threadpool_limits

        x = points.double().numpy()

        def fit(k: int):  # one thread: the points are few, and OpenMP threads on shared cores only wait
            with threadpool_limits(limits=1):
                return KMeans(n_clusters=k, n_init=10, random_state=self.seed).fit_predict(x)

        if self.n_clusters != "auto":
            k = min(int(self.n_clusters), n)
            return torch.as_tensor(fit(k), dtype=torch.long), k
        if n < 3:  # the silhouette needs 2 <= k <= n - 1
            return torch.zeros(n, dtype=torch.long), 1
        best = max(((silhouette_score(x, labels), k, labels) for k in range(2, min(MAX_AUTO_CLUSTERS, n - 1) + 1)
                    for labels in [fit(k)]), key=lambda found: found[0])
        return torch.as_tensor(best[2], dtype=torch.long), best[1]

    def fit(self, model: nn.Module, forget: list, retain: list, pad_token_id: int):
        if not forget or not retain:
            raise UnlearnkitError("guard_it fits its steering vectors on forget and retain examples: give the task "
                                  "a non-empty retain set")
        layers = self.layer_indices(model)
        was_training = model.training
        model.eval()
        try:
            opening = shared_opening([item.input_ids for item in forget + retain])
            forget_means, sums_f, count_f = self._activations(model, forget, pad_token_id, layers, opening)
            retain_means, sums_r, count_r = self._activations(model, retain, pad_token_id, layers, opening)
            n_f, n_r = len(forget), len(retain)
            router = layers[0]
            center = retain_means[router].mean(dim=0)
            centred = forget_means[router] - center
            labels, k = self._cluster(F.normalize(centred, dim=-1))
            centroids = F.normalize(torch.stack([centred[labels == c].mean(dim=0) for c in range(k)]), dim=-1)
            vectors, scales = [], []
            for l in layers:
                raw = steering_vectors(forget_means[l], retain_means[l].mean(dim=0), labels, k, self.vector)
                scale = (sums_f[l] + sums_r[l]) / (count_f + count_r)  # the mean per-token norm, both corpora
                vectors.append(F.normalize(raw, dim=-1) * scale)
                scales.append(scale)
            artifact = {"layers": torch.tensor(layers, dtype=torch.long), "vectors": torch.stack(vectors),
                        "centroids": centroids, "center": center, "threshold": torch.tensor(0.0),
                        "coeff": torch.tensor(float(self.coeff)),
                        "rotation_only": torch.tensor(bool(self.rotation_only))}
            logs: dict[str, Any] = {"layers": layers, "clusters": k, "forget_examples": n_f, "retain_examples": n_r,
                                    "activation_norms": scales, "shared_opening": opening}
            if self.threshold == "auto":
                probe = self.transform(artifact)
                positive, opening_best = self._activations(model, forget, pad_token_id, [router], opening, probe)
                negative, _ = self._activations(model, retain, pad_token_id, [router], opening, probe)
                threshold = logs["separating_threshold"] = youden_threshold(positive, negative)
                if opening_best >= threshold:  # never route the opening: it would steer every prompt
                    threshold = float(torch.nextafter(torch.tensor(opening_best), torch.tensor(2.0)))
                logs["opening_score"] = opening_best if opening else None
                # the shares routed at the threshold kept (raised above the opening's score when it had to be)
                logs["routed_forget_positions"] = float((positive >= threshold).float().mean())
                logs["routed_retain_positions"] = float((negative >= threshold).float().mean())
            else:
                threshold = float(self.threshold)
            artifact["threshold"] = torch.tensor(threshold)
            logs["threshold"] = threshold
        finally:
            model.train(was_training)
        return artifact, logs

    def transform(self, artifact: dict[str, torch.Tensor]) -> GuardItTransform:
        return GuardItTransform(**artifact)
