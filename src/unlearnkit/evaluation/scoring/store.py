"""On-disk store of per-item evaluation results, so an interrupted evaluation resumes and a repeated one is instant.

Results live in ``<root>/<model fingerprint>/<kind>-<settings hash>/part-<rank>.jsonl``: one JSON line per scored
pair or generated question, appended (flushed and fsync-ed) after every batch. A killed evaluation leaves complete
lines for every finished batch and at most one torn last line, which is ignored; the next evaluation of the same
model with the same settings reads what is there and computes only the rest. Each process appends to its own part
file, and every process reads them all.

The model fingerprint hashes every parameter's name, dtype, shape and bytes (xxh3-128), plus the formatting that
turns text into tokens (template, limits, vocabulary, separate or joint tokenization), so a changed weight or template never reads stale results.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import xxhash

from unlearnkit.data.formatting import QAFormatter


def model_fingerprint(model, formatter: QAFormatter) -> str:
    """A digest of the model's weights and of how the formatter tokenizes (template, limits, vocabulary)."""
    digest = xxhash.xxh3_128()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1).contiguous().cpu()
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    tokenizer = formatter.tokenizer
    vocabulary = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else str(tokenizer.get_vocab())
    formatting = [formatter.use_chat, formatter.max_length, formatter.eos_token_id, formatter.prompt_text("?"),
                  vocabulary]
    if formatter.tokenization != "separate":  # other token sequences; "separate" keeps the fingerprints it had
        formatting.append(formatter.tokenization)
    digest.update(json.dumps(formatting).encode())
    return digest.hexdigest()


def settings_key(kind: str, settings: dict) -> str:
    return f"{kind}-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]}"


def item_key(item) -> str:
    """The stored key of a pair ``(question, answer)`` or a question string."""
    return json.dumps(item, ensure_ascii=False)


class ResultStore:
    """Append-only JSON-lines results of one (model, kind, settings), one part file per process."""

    def __init__(self, root: Path, fingerprint: str, kind: str, settings: dict, rank: int = 0):
        self.folder = Path(root) / fingerprint / settings_key(kind, settings)
        self.rank = rank

    def load(self) -> dict[str, dict]:
        done: dict[str, dict] = {}
        for part in sorted(self.folder.glob("part-*.jsonl")):
            for line in part.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the torn last line of a killed writer
                    continue
                done[row["key"]] = row["value"]
        return done

    def append(self, values: dict[str, dict]) -> None:
        if not values:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"key": k, "value": v}, ensure_ascii=False) + "\n" for k, v in values.items())
        part = self.folder / f"part-{self.rank}.jsonl"
        with open(part, "a+b") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:  # a killed writer's torn last line: end it, so that the next line stays whole
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    lines = "\n" + lines
            handle.write(lines.encode())
            handle.flush()
            os.fsync(handle.fileno())
