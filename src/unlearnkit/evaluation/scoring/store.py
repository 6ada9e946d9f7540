"""On-disk store of per-item evaluation results, so an interrupted evaluation resumes and a repeated one is instant.

Results live in ``<root>/<model fingerprint>/<kind>-<settings hash>/part-<rank>.jsonl``: one JSON line per scored
pair or generated question, appended (flushed and fsync-ed) after every batch. A killed evaluation leaves complete
lines for every finished batch and at most one torn last line, which is ignored; the next evaluation of the same
model with the same settings reads what is there and computes only the rest. Each process appends to its own part
file, and every process reads them all.

**Integrity** (issue #20). Each line is ``<JSON>\t<xxh3-64 of the JSON text>``: the file is appended to batch by
batch (that is what lets a killed evaluation resume), so it cannot be written whole and renamed; a digest per line
gives the same guarantee line by line. On load every whole line must match its digest: a changed, truncated or
unreadable line (a flipped bit, an edited file, an older format) is a one-line :class:`CacheError` naming the folder
to delete, whose results the next evaluation recomputes; only the unterminated tail of a killed writer is skipped,
and the next append cuts it off. xxh3 rather than SHA-256: the lines are read on every evaluation, and what the
digest guards against is damage, not an adversary (who could rewrite the digests too). ``STORE_FORMAT`` is part
of every folder's name, so folders of the format before the digests are never read.

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
from unlearnkit.errors import CacheError

STORE_FORMAT = 2  # 2: a digest on every line


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
    keyed = {**settings, "store_format": STORE_FORMAT}
    return f"{kind}-{hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]}"


def _digest(payload: bytes) -> bytes:
    return xxhash.xxh3_64_hexdigest(payload).encode()


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
            try:
                raw = part.read_bytes()
            except OSError as exc:
                raise self._damaged(part, f"unreadable: {exc.strerror or type(exc).__name__}") from None
            whole = raw[:raw.rfind(b"\n") + 1]  # after the last newline: the torn line of a killed writer, skipped
            for number, line in enumerate(whole.splitlines(), start=1):
                payload, tab, digest = line.rpartition(b"\t")
                if not tab or _digest(payload) != digest:
                    raise self._damaged(part, f"line {number} does not match its digest")
                try:
                    row = json.loads(payload)
                    done[row["key"]] = row["value"]
                except (ValueError, KeyError, TypeError):
                    raise self._damaged(part, f"line {number} is not a stored result") from None
        return done

    def _damaged(self, part: Path, problem: str) -> CacheError:
        return CacheError(f"evaluation store {part} is damaged ({problem}): delete {self.folder} (its results are "
                          "computed again by the next evaluation)")

    def append(self, values: dict[str, dict]) -> None:
        if not values:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = b""
        for key, value in values.items():
            payload = json.dumps({"key": key, "value": value}, ensure_ascii=False).encode()
            lines += payload + b"\t" + _digest(payload) + b"\n"
        part = self.folder / f"part-{self.rank}.jsonl"
        with open(part, "a+b") as handle:  # one writer per part file (its process)
            handle.seek(0)
            size = handle.seek(0, os.SEEK_END)
            if size > 0:  # a killed writer's torn last line: cut it off, so that every line stays whole
                handle.seek(max(0, size - CHUNK))
                tail = handle.read()
                end = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else _last_line_end(handle)
                if end != size:
                    handle.truncate(end)
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())


CHUNK = 1 << 20


def _last_line_end(handle) -> int:
    """The offset just after the file's last newline (0 when there is none), read from the start."""
    handle.seek(0)
    end, offset = 0, 0
    while chunk := handle.read(CHUNK):
        if b"\n" in chunk:
            end = offset + chunk.rfind(b"\n") + 1
        offset += len(chunk)
    return end
