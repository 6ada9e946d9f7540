"""The evaluation store's digests (issue #20, point 4; evaluation/scoring/store.py): every stored line is
``<JSON>\\t<xxh3-64 of the JSON>`` (checked here with xxhash run by the test), a damaged whole line is a one-line
CacheError naming the file, the line and the folder to delete; only a killed writer's unterminated tail is skipped,
and the next append cuts it off."""

import json

import pytest
import xxhash

from unlearnkit.errors import CacheError
from unlearnkit.evaluation.scoring.store import ResultStore


def test_each_line_carries_the_digest_of_its_json(tmp_path):
    store = ResultStore(tmp_path, "model", "scores", {"version": 1})
    store.append({"a": {"v": 1.5}, "b": {"v": [1, 2]}})
    lines = (store.folder / "part-0.jsonl").read_bytes().splitlines()
    assert len(lines) == 2
    for line, key in zip(lines, "ab"):
        payload, digest = line.split(b"\t")
        assert digest.decode() == xxhash.xxh3_64_hexdigest(payload)
        assert json.loads(payload)["key"] == key
    assert store.load() == {"a": {"v": 1.5}, "b": {"v": [1, 2]}}


def test_a_flipped_byte_in_a_whole_line_is_refused(tmp_path):
    store = ResultStore(tmp_path, "model", "scores", {"version": 1})
    for key in "abc":
        store.append({key: {"v": 1}})
    part = store.folder / "part-0.jsonl"
    raw = bytearray(part.read_bytes())
    second = raw.index(b"\n") + 1
    raw[second + raw[second:].index(b'"v": 1') + 5] = ord("7")  # line 2's value 1 becomes 7; its digest does not
    part.write_bytes(bytes(raw))
    with pytest.raises(CacheError) as caught:
        store.load()
    assert str(caught.value) == (f"evaluation store {part} is damaged (line 2 does not match its digest): delete "
                                 f"{store.folder} (its results are computed again by the next evaluation)")


def test_a_torn_tail_is_skipped_and_cut_off_by_the_next_append(tmp_path):
    store = ResultStore(tmp_path, "model", "scores", {"version": 1})
    store.append({"a": {"v": 1}})
    part = store.folder / "part-0.jsonl"
    whole = part.read_bytes()
    part.write_bytes(whole + b'{"key": "half", "val')  # a writer killed mid-line
    assert store.load() == {"a": {"v": 1}}
    store.append({"b": {"v": 2}})
    assert part.read_bytes().startswith(whole + b'{"key": "b"')  # the torn tail is gone, no line was merged
    assert store.load() == {"a": {"v": 1}, "b": {"v": 2}}
