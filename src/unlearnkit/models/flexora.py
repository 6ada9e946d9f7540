"""Flexora's layer search for LoRA unlearning: ``model.lora.layers: flexora`` (``model.flexora``: its settings).

Paper: Wei, Shu, He and Yu, "Flexora: Flexible Low-Rank Adaptation for Large Language Models", ACL 2025,
arXiv:2408.10774 (code built on LLaMA-Factory, not read); research/methods.md §23. Layer selection is a
hyper-parameter optimization problem solved by unrolled differentiation; then LoRA trains on the chosen layers only.

The search (this module; the bilevel solver is optim/bilevel/unrolled.py):

- **gates** x: one scalar alpha_l per transformer block, multiplying the LoRA update of every adapted module in it:
  h = W x + alpha_l (lora_alpha / r) B A x (a forward hook on each ``lora_B``); every alpha_l starts at 1, so the
  gated model starts as the plain LoRA model (and, with B = 0, as the target).
- **lower level** y (the LoRA weights A, B that the method trains): g(x, y) = the method's own unlearning loss
  (``method.loss``) on a *training* slice of the forget set (and of the retain set, when the method uses it).
- **upper level**: f(x, y) = the same loss on *held-out* slices (``val_forget`` forget and ``val_retain`` retain
  examples, drawn by ``seed``), so a gate grows where the update learnt on the training slice also unlearns the
  held-out forget examples and keeps the held-out retain ones.
- **one iteration**: ``unroll_steps`` k >= 1: the unrolled solver takes k SGD steps (``lora_lr``) on g in y and
  returns h = d f(x, y_k(x)) / dx through them (Hessian-vector products, no Hessian); k = 0: one SGD step on g, then
  h = grad_x f at the new y (the first-order approximation). The gates then take an Adam step (``gate_lr``) on h
  (DARTS's optimizer for its architecture weights, which Flexora's search follows; Adam makes the step independent
  of the hypergradient's scale, tiny while B is near 0). The gates' ``.grad`` is only ever set from h, i.e. from the
  validation loss: the lower steps differentiate g with respect to y alone.
- **selection**: ``select: top_k`` keeps the ``keep`` blocks with the largest gates (default: half of the blocks,
  rounded up; Flexora ranks its hyper-parameters and keeps the top ones), ties to the lower index; ``threshold``
  keeps the blocks whose gate ends above ``threshold``. Blocks without an adapter are never selected.

Then alpha is discarded: the model's adapters are removed and LoRA is put back, freshly initialised by the run's
seed, on the selected blocks only (peft's ``layers_to_transform``), and the run unlearns as usual. The run directory
keeps the selection, the gates and the search's loss curve in ``flexora.json`` (also ``results.json: flexora``, shown
in the report); a resumed run reads it back instead of searching again.

Choices of this toolkit (the paper's details were not read): the gates' initial value 1, the plain SGD lower step
(the one the unrolled solver differentiates), Adam on the gates, the defaults of ``model.flexora`` (config.py:
30 iterations, gate_lr 0.05, lora_lr 0.05, k = 1, 4 + 4 held-out examples, batches of 4): small values that run
on the tiny synthetic task, not tuned (docs/bilevel.md's study uses them). Cost per iteration with k = 1: one forward-backward of g for the step, one of f, one of g with its graph and two
backward products through it: about 4 training steps of the method on a batch; k = 0: about 2.

Limits: one process (no gradient synchronisation in the search); methods trained on refusal answers (``uses_idk``)
are refused; k >= 1 differentiates twice through attention, so the search runs PyTorch's scaled-dot-product
attention on its math backend (the fused kernels have no second derivative; a model with another attention kernel
needs k = 0).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from accelerate import PartialState
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from unlearnkit.config import FlexoraSettings, RunConfig
from unlearnkit.data.formatting import Encoded
from unlearnkit.errors import ConfigError, ModelError, UnlearnkitError
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.registry import get_method
from unlearnkit.models.lora import add_lora, reference_view
from unlearnkit.optim.bilevel import BilevelProblem, get_solver
from unlearnkit.optim.bilevel.problem import lower_sgd, norm
from unlearnkit.runio import write_json
from unlearnkit.training.batches import all_forget_batches, forget_batch, retain_batch
from unlearnkit.training.sharding import derived_seed

FLEXORA_FILE = "flexora.json"
log = logging.getLogger("unlearnkit")


def uses_flexora(cfg: RunConfig) -> bool:
    return cfg.model.lora is not None and cfg.model.lora.layers == "flexora"


def settings_of(cfg: RunConfig) -> FlexoraSettings:
    return cfg.model.flexora or FlexoraSettings()


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a (peft-wrapped) causal LM, in order; a one-line error for an unknown layout."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = inner
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ModelError(f"model.lora.layers: flexora gates transformer blocks, and {type(inner).__name__} has none "
                     "under model.layers or transformer.h: use layers: all for this model")


class LayerGates:
    """One scalar gate per transformer block on the LoRA updates inside it: ``values[l]`` multiplies the output of
    every ``lora_B`` of block l (forward hooks, removed by :meth:`remove`)."""

    def __init__(self, model: nn.Module):
        blocks = decoder_blocks(model)
        dtype = next(p for p in model.parameters() if p.requires_grad).dtype
        self.values = torch.ones(len(blocks), dtype=dtype, requires_grad=True)
        self.gated: list[int] = []  # the blocks that hold at least one adapter
        self._handles = []
        for index, block in enumerate(blocks):
            for module in block.modules():
                lora_b = getattr(module, "lora_B", None)
                if not isinstance(lora_b, nn.ModuleDict):
                    continue
                for linear in lora_b.values():
                    self._handles.append(linear.register_forward_hook(self._hook(index)))
                if not self.gated or self.gated[-1] != index:
                    self.gated.append(index)

    def _hook(self, index: int) -> Callable:
        def scale(module, inputs, output):
            return output * self.values[index].to(device=output.device, dtype=output.dtype)
        return scale

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class Batches:
    """Successive batches over ``items`` (positions into a list), reshuffled each pass by (seed, name, pass)."""

    def __init__(self, items: Sequence[int], batch_size: int, seed: int, name: str):
        self.items, self.batch_size, self.seed, self.name = list(items), batch_size, seed, name
        self.order: list[int] = []
        self.passes = 0

    def next(self) -> list[int]:
        if len(self.order) < min(self.batch_size, len(self.items)):
            generator = torch.Generator().manual_seed(derived_seed(self.seed, self.name, self.passes))
            self.order = [self.items[i] for i in torch.randperm(len(self.items), generator=generator).tolist()]
            self.passes += 1
        chosen, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
        return chosen


def split(n: int, held_out: int, seed: int, name: str) -> tuple[list[int], list[int]]:
    """(training positions, held-out positions) of a list of ``n`` items, ``held_out`` of them drawn by ``seed``."""
    generator = torch.Generator().manual_seed(derived_seed(seed, "flexora-split", name))
    order = torch.randperm(n, generator=generator).tolist()
    return sorted(order[held_out:]), sorted(order[:held_out])


class FlexoraSearch:
    """The search stage on a peft LoRA ``model``: gates (upper level) and the method's LoRA weights (lower level).

    ``step()`` is one iteration; ``lower_step()`` (one SGD step on the training loss, in the LoRA weights only) and
    ``upper_step()`` (the hypergradient of the validation loss, written to ``gates.values.grad``, and the gates' Adam
    step) are its two halves. ``method`` is a fresh instance: :meth:`prepare` runs its ``prepare`` on the untouched
    model (gates at 1, B = 0: the target).
    """

    def __init__(self, model: nn.Module, method: UnlearningMethod, forget: list[Encoded], retain: list[Encoded] | None,
                 pad_token_id: int, settings: FlexoraSettings, seed: int):
        self.model, self.method, self.settings, self.seed = model, method, settings, seed
        self.forget, self.retain, self.pad_token_id = forget, retain, pad_token_id
        uses_retain = method.uses_retain and retain is not None
        train_forget, val_forget = split(len(forget), settings.val_forget, seed, "forget")
        train_retain, val_retain = (split(len(retain), settings.val_retain, seed, "retain") if uses_retain
                                    else ([], []))
        self.slices = {"train_forget": train_forget, "val_forget": val_forget,
                       "train_retain": train_retain, "val_retain": val_retain}
        size = settings.batch_size
        self.train_batches = (Batches(train_forget, size, seed, "train-forget"),
                              Batches(train_retain, size, seed, "train-retain") if uses_retain else None)
        self.val_batches = (Batches(val_forget, size, seed, "val-forget"),
                            Batches(val_retain, size, seed, "val-retain") if uses_retain else None)
        self.gates = LayerGates(model)
        self.last: dict[str, float] = {}
        self.problem = BilevelProblem(upper=[self.gates.values], lower=list(method.trainable_parameters(model)),
                                      f=lambda batch: self._loss(batch, "val_loss"),
                                      g=lambda batch: self._loss(batch, "train_loss"),
                                      f_batch=lambda: self._draw(self.val_batches),
                                      g_batch=lambda: self._draw(self.train_batches))
        self.solver = get_solver("unrolled", unroll_steps=settings.unroll_steps, lower_lr=settings.lora_lr,
                                 lr=settings.gate_lr)
        self.optimizer = torch.optim.Adam([self.gates.values], lr=settings.gate_lr)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _draw(self, streams) -> tuple[dict, dict | None]:
        forget_stream, retain_stream = streams
        device = self._device()
        rows = forget_batch(self.forget, forget_stream.next(), self.pad_token_id, device=device)
        kept = retain_batch(self.retain, retain_stream.next(), self.pad_token_id, device) if retain_stream else None
        return rows, kept

    def _loss(self, batch: tuple[dict, dict | None], key: str) -> torch.Tensor:
        loss, _ = self.method.loss(self.model, *batch)
        self.last[key] = float(loss.detach())
        return loss

    def prepare(self) -> None:
        """The method's ``prepare`` on the untouched model and every forget example (NPO's reference log-probs)."""
        reference = reference_view(self.model) if self.method.needs_reference_model else None
        batches = all_forget_batches(self.forget, self.settings.batch_size, self.pad_token_id, device=self._device())
        was_training = self.model.training
        self.model.eval()
        self.method.prepare(self.model, batches, reference)
        self.model.train(was_training)

    def lower_step(self) -> None:
        lower_sgd(self.problem, 1, self.settings.lora_lr)

    def upper_step(self) -> dict[str, float]:
        h = self.solver.hypergradient(self.problem)[0]
        self.gates.values.grad = h.detach().clone()
        self.optimizer.step()
        return {"gate_grad_norm": norm([h])}

    def step(self, iteration: int) -> dict[str, float]:
        torch.manual_seed(derived_seed(self.seed, "flexora-step", iteration))  # LoRA dropout, if any
        if self.settings.unroll_steps == 0:
            self.lower_step()
        logs = self.upper_step()
        for key in ("train_loss", "val_loss"):
            if not math.isfinite(self.last.get(key, 0.0)):
                raise UnlearnkitError(f"Flexora's search diverged: its {key.replace('_', ' ')} is {self.last[key]} at "
                                      f"iteration {iteration + 1}: lower model.flexora.lora_lr")
        return {"step": iteration + 1, **self.last, **logs}

    def run(self) -> list[dict]:
        self.prepare()
        self.model.train()
        with sdpa_kernel([SDPBackend.MATH]):  # the unroll's second derivatives: the fused kernels have none
            return [self.step(t) for t in range(self.settings.search_steps)]


def select_layers(gates: Sequence[float], gated: Sequence[int], settings: FlexoraSettings) -> list[int]:
    """The selected blocks (sorted) among ``gated``: the ``keep`` largest gates (top_k; ties to the lower index) or
    those above ``threshold``."""
    if settings.select == "top_k":
        keep = settings.keep or math.ceil(len(gated) / 2)
        return sorted(sorted(gated, key=lambda i: (-gates[i], i))[:keep])
    chosen = [i for i in gated if gates[i] > settings.threshold]
    if not chosen:
        raise UnlearnkitError(f"Flexora selected no layer: no gate ended above model.flexora.threshold "
                              f"{settings.threshold:g} (the largest is {max(gates[i] for i in gated):.4g}): lower "
                              "the threshold, or use select: top_k")
    return chosen


def check_request(cfg: RunConfig, method: UnlearningMethod, model: nn.Module, n_forget: int, n_retain: int,
                  processes: int) -> None:
    """Everything about a Flexora run that the data and the model decide, checked before anything is written."""
    settings = settings_of(cfg)
    if processes > 1:
        raise ConfigError("model.lora.layers: flexora searches in one process: run it without accelerate launch, "
                          "or use layers: all")
    if method.uses_idk:
        raise ConfigError(f"model.lora.layers: flexora does not search with refusal answers yet, and method "
                          f"{method.name!r} trains on them: use layers: all for this method")
    if settings.val_forget >= n_forget:
        raise ConfigError(f"model.flexora.val_forget is {settings.val_forget} and the forget set has {n_forget} "
                          f"training items, so none would be left to train on: set val_forget below {n_forget}")
    if method.uses_retain and settings.val_retain >= n_retain:
        raise ConfigError(f"model.flexora.val_retain is {settings.val_retain} and the retain set has {n_retain} "
                          f"training items, so none would be left to train on: set val_retain below {n_retain}")
    blocks = len(decoder_blocks(model))
    if settings.select == "top_k" and settings.keep is not None and settings.keep > blocks:
        raise ConfigError(f"model.flexora.keep is {settings.keep} and the model has {blocks} layers: set keep to "
                          f"at most {blocks}")


def search(model: nn.Module, method: UnlearningMethod, forget: list[Encoded], retain: list[Encoded] | None,
           pad_token_id: int, settings: FlexoraSettings, seed: int) -> dict:
    """Run the search on the peft LoRA ``model`` (its adapters are trained in place) and return the record of
    flexora.json: the selected layers, the final gates, the slices' sizes and the loss curve."""
    started = time.time()
    searcher = FlexoraSearch(model, method, forget, retain, pad_token_id, settings, seed)
    try:
        curve = searcher.run()
    finally:
        searcher.gates.remove()
    gates = [float(v) for v in searcher.gates.values.detach()]
    layers = select_layers(gates, searcher.gates.gated, settings)
    return {"layers": layers, "of": len(gates), "gates": gates, "gated": searcher.gates.gated,
            "settings": {**settings.model_dump(), "seed": seed},
            "slices": {name: len(rows) for name, rows in searcher.slices.items()},
            "curve": curve, "seconds": round(time.time() - started, 1)}


def flexora_stage(cfg: RunConfig, model: nn.Module, forget: list[Encoded], retain: list[Encoded] | None,
                  pad_token_id: int, folder: Path) -> tuple[nn.Module, dict]:
    """The search (with a fresh instance of the run's method; or, resuming, its record in ``folder``), flexora.json
    written, and the model's base with fresh LoRA adapters (seeded by the run's seed) on the selected layers only."""
    saved = folder / FLEXORA_FILE
    if saved.is_file():
        record = json.loads(saved.read_text())
    else:
        settings = settings_of(cfg)
        seed = cfg.seed if settings.seed is None else settings.seed
        log.info("Flexora: searching the LoRA layers (%d iterations)", settings.search_steps)
        method = get_method(cfg.method.name, **cfg.method.params)
        model.to(PartialState(cpu=not torch.cuda.is_available()).device)  # where the training loop will train
        record = search(model, method, forget, retain, pad_token_id, settings, seed)
        write_json(saved, record)
    log.info("Flexora: LoRA on layers %s of %d", record["layers"], record["of"])
    base = model.unload()  # the base weights, without the search's adapters
    return add_lora(base, cfg.model.lora, seed=cfg.seed, layers=record["layers"]), record
