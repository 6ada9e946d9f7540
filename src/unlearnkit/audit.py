"""The audit record of a run (``audit.json``) and ``unlearnkit verify``, which checks a run against it.

Unlearning is often done to meet a deletion request; the record lets anyone show afterwards which data was
forgotten from which model with which result. It holds SHA-256 digests of

- every data file the task was read from (each file a task option names; each file directly inside a folder it
  names, as TOFU's ``data_dir``), and of the example lists the run used (forget, retain, holdout and the
  evaluation splits: a canonical JSON of the examples, so a change anywhere in one example changes it);
- the weights (``*.safetensors``) of the base (when it is a local folder or the built-in ``tiny``), target, retain
  and unlearned models;
- the resolved configuration (``config.yaml`` of the run directory);

and the package and dependency versions, the git commit of the package when it runs from a checkout, the seed,
the hardware, the start and end times, and the headline results (each model's headline aggregates with their 95%
intervals, and the unlearned model's forget-set aggregates, which ``verify`` recomputes).

:func:`verify` re-hashes everything, re-evaluates the unlearned model on the forget set (per-item scores read
from the evaluation store when it holds them, all computed afresh with ``recompute=True``) and returns one line
per mismatch, each naming the file (or the record entry) that differs. Recomputed values match when
``|a − b| ≤ 1e-6 + 1e-4·|b|`` (:data:`RTOL`, :data:`ATOL`): the same weights on the same kind of device give the
same numbers to far better than that; another device's kernels may differ in the last digits of float32.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from unlearnkit.errors import UnlearnkitError

AUDIT_FILE = "audit.json"
AUDIT_VERSION = 1
RTOL, ATOL = 1e-4, 1e-6
DEPENDENCIES = ("torch", "transformers", "accelerate", "tokenizers", "safetensors", "datasets", "numpy", "scipy",
                "scikit-learn", "pydantic", "rouge-score", "nltk")
SPLITS = ("forget", "retain", "holdout", "eval_forget", "eval_retain", "real_authors", "world_facts",
          "forget_qa", "retain_qa")
FORGET_METRICS = {"tofu": ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Truth_Ratio"),
                  "muse": ("verbmem_f", "knowmem_f")}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def examples_sha256(examples: list) -> str:
    """SHA-256 of a canonical JSON of the examples (QA examples as their fields, raw texts as themselves)."""
    items = [e if isinstance(e, str) else asdict(e) for e in examples]
    return hashlib.sha256(json.dumps(items, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def weights_sha256(folder: Path) -> dict[str, str]:
    """``{file name: SHA-256}`` of each ``*.safetensors`` file of a model folder."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).glob("*.safetensors"))}


def data_files(options: dict) -> dict[str, str]:
    """``{path: SHA-256}`` of each file a task option names (files directly inside a named folder too)."""
    found: dict[str, str] = {}
    for value in options.values():
        if not isinstance(value, (str, os.PathLike)):
            continue
        path = Path(value)
        if path.is_file():
            found[str(path.resolve())] = sha256_file(path)
        elif path.is_dir():
            for child in sorted(p for p in path.iterdir() if p.is_file()):
                found[str(child.resolve())] = sha256_file(child)
    return found


def example_hashes(task) -> dict[str, dict]:
    return {split: {"count": len(getattr(task, split)), "sha256": examples_sha256(getattr(task, split))}
            for split in SPLITS if hasattr(task, split)}


def _model_entry(folder: Path | None, shown: str | None = None) -> dict | None:
    if folder is None:
        return None
    return {"path": shown or str(Path(folder).resolve()), "weights": weights_sha256(Path(folder))}


def _inference_entry(run_dir: Path) -> dict | None:
    """The digests of an inference-time method's artifact (``inference/``: its tensors and its JSON), or None."""
    folder = run_dir / "inference"  # models/unlearned.py's INFERENCE_DIR (not imported: it imports torch)
    if not folder.is_dir():
        return None
    return {"path": "inference", "weights": {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}}


def base_folder_of(cfg, task) -> Path | None:
    """The base's local folder when there is one (a folder, or the built-in ``tiny`` as cached), else None."""
    base = cfg.model.base
    if cfg.model.target or not base:
        return None
    if Path(base).is_dir():
        return Path(base)
    if base == "tiny":  # built from the task's text; cached by preparation under bases/tiny-<hash>
        from unlearnkit.models.bases import base_folder
        from unlearnkit.runio import default_cache_dir

        folder = Path(base_folder(base, task, cfg.seed, default_cache_dir()))
        return folder if folder.is_dir() else None
    return None


def git_commit() -> dict | None:
    """The commit of the checkout the package runs from, when it runs from one, and whether its tracked files
    differ from that commit (``dirty``: the code that ran is then not exactly the commit)."""
    here = str(Path(__file__).resolve().parent)

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", here, *args], check=False, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions() -> dict[str, str | None]:
    from unlearnkit import __version__

    found: dict[str, str | None] = {"python": platform.python_version(), "unlearnkit": __version__}
    for name in DEPENDENCIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def hardware() -> dict:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "gpus": gpus, "processes": int(os.environ.get("WORLD_SIZE", "1"))}


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def headline_results(results: dict, suite: str) -> dict:
    """Each model's headline aggregates with their intervals, and the unlearned model's forget-set aggregates."""
    from unlearnkit.evaluation.metrics import registry

    names = [n for n in registry.headline() if registry.metric(n, suite) is not None]
    models = results.get("models", {})
    out = {who: {n: {"value": m["aggregates"].get(n), "interval": (m.get("intervals") or {}).get(n)}
                 for n in names if n in m["aggregates"]} for who, m in models.items()}
    unlearned = models.get("unlearned", {}).get("aggregates", {})
    forget = {n: unlearned.get(n) for n in FORGET_METRICS[suite] if n in unlearned}
    return {"suite": suite, "headline": out, "forget_set": forget}


def audit_record(cfg, task, models, run_dir: Path, results: dict, started: float) -> dict:
    """The audit record of a run being finished in ``run_dir`` (its config.yaml and model/ already written)."""
    run_dir = Path(run_dir)
    suite = "muse" if results.get("task", {}).get("kind") == "corpus" else "tofu"
    return {
        "audit_version": AUDIT_VERSION,
        "started": _iso(started), "finished": _iso(time.time()),
        "config": {"file": "config.yaml", "sha256": sha256_file(run_dir / "config.yaml")},
        "data": {"source": cfg.task.source, "files": data_files(cfg.task.options), "examples": example_hashes(task)},
        "models": {"base": _model_entry(base_folder_of(cfg, task)), "target": _model_entry(models.target),
                   "retain": _model_entry(models.retain), "unlearned": _model_entry(run_dir / "model", "model"),
                   "inference": _inference_entry(run_dir)},
        "seed": cfg.seed,
        "versions": versions(), "git_commit": git_commit(), "hardware": hardware(),
        "results": headline_results(results, suite),
    }


# ----------------------------------------------------------------------------------------------------- verify


def load_audit(run_dir: Path) -> dict:
    path = Path(run_dir) / AUDIT_FILE
    if not Path(run_dir).is_dir():
        raise UnlearnkitError(f"run directory {run_dir} does not exist: pass a run directory written by `unlearnkit run`")
    if not path.exists():
        raise UnlearnkitError(f"{run_dir} has no {AUDIT_FILE}: only runs written by this version record one; "
                              "rerun the job to get an audit record")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UnlearnkitError(f"{path} is not valid JSON ({exc}): the record was damaged") from None


def _check_file(path: Path, expected: str, label: str) -> list[str]:
    if not path.is_file():
        return [f"{path}: missing ({label})"]
    actual = sha256_file(path)
    return [] if actual == expected else [f"{path}: SHA-256 differs from the record ({label})"]


def check_hashes(run_dir: Path, record: dict) -> list[str]:
    """One line per file whose digest differs from the record (or that is gone)."""
    run_dir = Path(run_dir)
    problems = _check_file(run_dir / record["config"]["file"], record["config"]["sha256"], "resolved config")
    for path, digest in record["data"]["files"].items():
        problems += _check_file(Path(path), digest, "data file")
    for role, entry in record["models"].items():
        if entry is None:
            continue
        folder = run_dir / entry["path"] if role in ("unlearned", "inference") else Path(entry["path"])
        for name, digest in entry["weights"].items():
            problems += _check_file(folder / name, digest, f"{role} model weights")
    return problems


def check_examples(task, record: dict) -> list[str]:
    """One line per example list whose digest (or size) differs from the record, naming the data files read."""
    files = ", ".join(record["data"]["files"]) or f"task source {record['data']['source']!r}"
    problems = []
    for split, entry in example_hashes(task).items():
        recorded = record["data"]["examples"].get(split)
        if recorded is None:
            continue
        if recorded["sha256"] != entry["sha256"]:
            problems.append(f"{files}: the {split} examples differ from the record ({entry['count']} now, "
                            f"{recorded['count']} recorded)")
    return problems


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= ATOL + RTOL * abs(b)


def check_results(run_dir: Path, record: dict, recomputed: dict) -> list[str]:
    """The recomputed forget-set aggregates against the record, and results.json's headline against the record."""
    problems = []
    for name, value in record["results"]["forget_set"].items():
        if not close(recomputed.get(name), value):
            problems.append(f"{Path(run_dir) / 'model'}: re-evaluated {name} = {recomputed.get(name)!r}, recorded "
                            f"{value!r}")
    results_file = Path(run_dir) / "results.json"
    models = json.loads(results_file.read_text()).get("models", {}) if results_file.exists() else {}
    for who, metrics in record["results"]["headline"].items():
        for name, entry in metrics.items():
            now = models.get(who, {}).get("aggregates", {}).get(name)
            if not close(now, entry["value"]):
                problems.append(f"{results_file}: {who} {name} = {now!r}, recorded {entry['value']!r}")
    return problems


def reevaluate(run_dir: Path, cfg, task, recompute: bool, progress: bool) -> dict:
    """The unlearned model's forget-set aggregates, evaluated again (store=False: every score computed afresh)."""
    from unlearnkit.data.formatting import QAFormatter
    from unlearnkit.evaluation.evaluator import Evaluator, suite_of
    from unlearnkit.models.unlearned import load_unlearned

    model, tokenizer = load_unlearned(run_dir, trust_remote_code=cfg.model.trust_remote_code)
    formatter = QAFormatter(tokenizer, max_length=cfg.model.max_length, template=cfg.model.template)
    wanted = FORGET_METRICS[suite_of(task)]
    evaluator = Evaluator(task, formatter, cfg.eval, metrics=wanted, store=not recompute, progress=progress)
    result = evaluator.evaluate(model, None, intervals=False)
    return {n: result.aggregates.get(n) for n in wanted}


def verify(run_dir: Path, recompute: bool = False, progress: bool = False) -> list[str]:
    """Every mismatch between ``run_dir`` and its audit record, one line each (empty: the run is as recorded)."""
    from unlearnkit.config import load_config
    from unlearnkit.data.sources import load_task

    run_dir = Path(run_dir)
    record = load_audit(run_dir)
    problems = check_hashes(run_dir, record)
    cfg = load_config(run_dir / "config.yaml")
    task = load_task(cfg.task.source, **cfg.task.options)
    problems += check_examples(task, record)
    if (run_dir / "model").is_dir():
        problems += check_results(run_dir, record, reevaluate(run_dir, cfg, task, recompute, progress))
    return problems
