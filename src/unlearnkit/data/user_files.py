"""Reading the user's data files: UTF-8 text, and JSON Lines (or ``.json`` arrays) one record at a time, with
errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from unlearnkit.errors import DataError


def read_utf8(path: Path) -> str:
    """The text of ``path`` (a UTF-8 byte-order mark is dropped)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found: check the path")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): save the "
                              "file with UTF-8 encoding") from None


def json_records(path: Path, text: str, example: str) -> Iterator[tuple[int, Any]]:
    """(1-based line or item number, parsed object) for a JSON Lines file or a ``.json`` array.

    ``example`` shows the expected shape of one record in the error message, e.g. ``{"text": "..."}``.
    """
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {err.lineno}, column {err.colno}: unreadable JSON ({err.msg}): fix the JSON array, "
                                  "or write one object per line") from None
        yield from enumerate(items, start=1)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}, column {err.colno}: unreadable JSON ({err.msg}): each line must be one "
                                  f"complete JSON object such as {example}") from None
