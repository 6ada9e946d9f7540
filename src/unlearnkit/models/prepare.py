"""``unlearnkit prepare``: fine-tune a base into the target model (retain + forget) and the retain model (retain only).

A QA task trains on its (question, answer) pairs (the answer tokens are the labels); a raw-text (MUSE-style)
:class:`~unlearnkit.data.corpus.CorpusTask` trains on its texts cut into ``max_length`` windows, every token a label
(:func:`~unlearnkit.data.corpus.encode_chunks`).

The retain model is the gold standard of unlearning: the model that never saw the forget set. Both are cached in
``<cache>/prepared/<hash>/{target,retain}`` where the hash covers the base, the task's training data, the formatting
and the fine-tuning hyper-parameters, so a second ``prepare`` with the same inputs is instant. A killed preparation
resumes from its last epoch checkpoint (``<hash>/work-<role>``); a folder only appears under its final name once
complete. Processes preparing the same model at once take turns (a file lock per model): the second one reads what
the first one trained.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from unlearnkit.data.corpus import CorpusTask, training_items
from unlearnkit.data.formatting import QAFormatter
from unlearnkit.data.types import Task
from unlearnkit.errors import CacheError
from unlearnkit.models.bases import load_base
from unlearnkit.models.load import save_model
from unlearnkit.models.prepared import (  # noqa: F401  (RECIPES, default_recipe, prepare_key: read from here too)
    RECIPES,
    default_recipe,
    prepare_key,
    prepared_root,
    run_recipe,
    verify_prepared,
    write_manifest,
)
from unlearnkit.runio import atomic_dir, default_cache_dir, write_json
from unlearnkit.training.config import TrainConfig
from unlearnkit.training.loop import train
from unlearnkit.training.objectives import FineTune

@dataclass(frozen=True)
class PreparedModels:
    target: Path
    retain: Path
    key: str


def prepare_models(task: Task | CorpusTask, base: str = "tiny", recipe: TrainConfig | None = None, *, max_length: int = 256,
                   template: str = "auto", seed: int = 0, cache_dir: Path | None = None,
                   trust_remote_code: bool = False, progress: bool = True, log=print,
                   force: bool = False) -> PreparedModels:
    """Fine-tune (or find in the cache, verified) the target and the retain model of ``task``; ``force``: fine-tune
    them again even when cached (a damaged cache is rebuilt this way)."""
    recipe = (recipe or default_recipe(base)).model_copy(update={"seed": seed})
    cache_dir = Path(cache_dir or default_cache_dir())
    key = prepare_key(task, base, recipe, max_length, template, seed)
    root = cache_dir / "prepared" / key
    root.mkdir(parents=True, exist_ok=True)
    folders = {}
    for role, examples in (("target", task.full), ("retain", task.retain)):
        folder = root / role
        folders[role] = folder
        with FileLock(root / f".{role}.lock"):  # another process preparing the same model: wait, then read it
            if force and folder.exists():
                shutil.rmtree(folder)
            _prepare_one(folder, role, examples, task, base, recipe, max_length, template, seed, cache_dir,
                         trust_remote_code, key, progress, log)
    return PreparedModels(target=folders["target"], retain=folders["retain"], key=key)


def _prepare_one(folder: Path, role: str, examples, task, base: str, recipe: TrainConfig, max_length: int,
                 template: str, seed: int, cache_dir: Path, trust_remote_code: bool, key: str, progress: bool,
                 log) -> None:
    if folder.exists():
        verify_prepared(folder)  # what was written, file by file; else a CacheError saying how to rebuild it
        log(f"{role} model: cached at {folder}")
        return
    model, tokenizer = load_base(base, task, seed, cache_dir, trust_remote_code)
    formatter = QAFormatter(tokenizer, max_length=max_length, template=template, tokenization=recipe.tokenization)
    encoded = training_items(examples, formatter)
    log(f"{role} model: fine-tuning {base} on {len(encoded)} examples ({recipe.epochs} epochs)")
    work = folder.parent / f"work-{role}"
    train(model, FineTune(), encoded, None, None, formatter.pad_token_id, recipe, work, resume=True, progress=progress)
    with atomic_dir(folder) as tmp:
        save_model(model, tokenizer, tmp)
        write_json(tmp / "unlearnkit_prepare.json", {"role": role, "base": base, "examples": len(examples),
                                                     "recipe": recipe.to_dict(), "key": key})
        write_manifest(tmp)  # every file's size and digest, renamed into place with them
    shutil.rmtree(work, ignore_errors=True)


def resolve_models(cfg, task: Task | CorpusTask, progress: bool = True, log=print, force: bool = False) -> PreparedModels:
    """The target and retain model folders of a run config (:class:`~unlearnkit.config.RunConfig`): given in
    ``model.target`` / ``model.retain``, or prepared (and cached) from ``model.base``.

    With several processes the models must be prepared already (one process fine-tunes, in ``unlearnkit prepare``).
    """
    if cfg.model.target:
        retain = Path(cfg.model.retain) if cfg.model.retain else None
        return PreparedModels(Path(cfg.model.target), retain, key="given")  # type: ignore[arg-type]
    recipe = run_recipe(cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _prepared_exists(cfg, task):
        raise CacheError("the target and retain models are not prepared yet: run `unlearnkit prepare CONFIG` "
                              "once in a single process, then launch the run with several processes")
    return prepare_models(task, cfg.model.base, recipe, max_length=cfg.model.max_length, template=cfg.model.template,
                          seed=cfg.seed, cache_dir=default_cache_dir(), trust_remote_code=cfg.model.trust_remote_code,
                          progress=progress, log=log, force=force)


def _prepared_exists(cfg, task: Task | CorpusTask) -> bool:
    root = prepared_root(cfg, task, default_cache_dir())
    return (root / "target" / "config.json").exists() and (root / "retain" / "config.json").exists()
