"""The unlearned model's card, ``model/README.md``: Hugging Face model-card metadata (YAML front matter) and a
short text, so the folder is ready for ``push_to_hub``.

Front matter (the Hub's model-card keys, https://huggingface.co/docs/hub/model-cards): ``library_name``,
``pipeline_tag``, ``tags``, ``base_model`` (only when the base is a Hub model id: the Hub rejects other values),
``datasets`` (``locuslab/TOFU`` for the TOFU source), and ``model-index`` with the unlearned model's headline
metrics; plus an ``unlearning`` block of our own (the Hub keeps unknown keys): the method and its parameters, the
task, the base as given, each headline metric with its 95% interval beside the retain and target models', and the
SHA-256 of the forget set (examples and files) from the audit record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

CARD_FILE = "README.md"

BUILTIN_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
SOURCE_DATASETS = {"tofu": "locuslab/TOFU"}


def hub_base_model(base: str | None) -> str | None:
    """The base as a Hub model id, when it is one (``org/name``, not a local folder)."""
    if not base:
        return None
    if base in BUILTIN_HUB_IDS:
        return BUILTIN_HUB_IDS[base]
    if Path(base).exists() or base.count("/") != 1 or base.startswith((".", "/")):
        return None
    return base


def card_metadata(cfg, results: dict, audit: dict) -> dict:
    method = results.get("method", {})
    task = results.get("task", {})
    headline = audit["results"]["headline"]
    unlearned = headline.get("unlearned", {})
    meta: dict = {"library_name": "transformers", "pipeline_tag": "text-generation",
                  "tags": ["unlearnkit", "machine-unlearning", f"unlearning-{method.get('name', '?')}"]}
    base = hub_base_model(cfg.model.base)
    if base:
        meta["base_model"] = base
    if cfg.task.source in SOURCE_DATASETS:
        meta["datasets"] = [SOURCE_DATASETS[cfg.task.source]]
    metrics = [{"type": name, "name": name, "value": entry["value"]} for name, entry in unlearned.items()
               if entry["value"] is not None]
    meta["model-index"] = [{"name": f"{task.get('name', 'task')}-{method.get('name', '?')}-unlearned",
                            "results": [{"task": {"type": "text-generation", "name": "machine unlearning"},
                                         "dataset": {"name": task.get("name", "?"), "type": cfg.task.source},
                                         "metrics": metrics}]}]
    examples = audit["data"]["examples"]
    meta["unlearning"] = {
        "method": method.get("name"), "parameters": method.get("params", {}), "citation": method.get("citation"),
        "base": cfg.model.base or None, "target_model": cfg.model.target or None,
        "task": {"source": cfg.task.source, "name": task.get("name"),
                 "forget_examples": examples.get("forget", {}).get("count")},
        "forget_set_sha256": examples.get("forget", {}).get("sha256"),
        "data_files_sha256": audit["data"]["files"],
        "metrics": {who: {name: {"value": e["value"], "interval_95": e["interval"]} for name, e in metrics_.items()}
                    for who, metrics_ in headline.items()},
        "unlearnkit_version": audit["versions"].get("unlearnkit"),
    }
    return meta


def render_card(cfg, results: dict, audit: dict) -> str:
    meta = card_metadata(cfg, results, audit)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    u = meta["unlearning"]
    rows = "\n".join(f"| {name} | {_cell(e)} | {_cell(u['metrics'].get('target', {}).get(name))} | "
                     f"{_cell(u['metrics'].get('retain', {}).get(name))} |"
                     for name, e in u["metrics"].get("unlearned", {}).items())
    return (f"---\n{front}---\n\n# {meta['model-index'][0]['name']}\n\n"
            f"This model was made to forget {u['task']['forget_examples']} examples of the task "
            f"`{u['task']['name']}` (source `{u['task']['source']}`) with the unlearning method `{u['method']}` "
            f"({u['citation']}), using unlearnkit {u['unlearnkit_version']}.\n\n"
            f"- Forget set SHA-256: `{u['forget_set_sha256']}` (a canonical JSON of the forget examples; the run's "
            "`audit.json` records it with every data file's and weight file's digest)\n"
            f"- Method parameters: `{json.dumps(u['parameters'])}`\n\n"
            "## Results\n\n95% percentile-bootstrap intervals over the evaluation examples in brackets. The retain "
            "model was fine-tuned without the forget set: unlearning aims at its forget-set numbers.\n\n"
            "| metric | unlearned | target | retain |\n|---|---|---|---|\n" + rows + "\n")


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "—"
    value, interval = entry["value"], entry.get("interval_95")
    text = f"{value:.4g}"
    return text if not interval or None in interval else f"{text} [{interval[0]:.4g}, {interval[1]:.4g}]"


def write_card(folder: Path, cfg, results: dict, audit: dict) -> Path:
    """Write ``folder/README.md`` through a temporary file and an atomic rename."""
    path = Path(folder) / CARD_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(render_card(cfg, results, audit))
    os.replace(tmp, path)
    return path
