"""Reading a config file: its YAML mapping (unreadable files and bad YAML as one line naming line and column), and
dotted-key overrides (``--set train.learning_rate=1e-4``). Shared by the LLM and classifier configs and the sweeps."""

from __future__ import annotations

from pathlib import Path

import yaml

from unlearnkit.errors import ConfigError


def read_config_data(path: str | Path) -> dict:
    """The YAML mapping of a config file, not yet validated; unreadable files and bad YAML are one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass the path of a YAML file (see examples/)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
                              "save it as UTF-8") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}{_yaml_problem(exc, text)}: fix the YAML syntax there") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping (task:, model:, method:, ...), not a {type(data).__name__}")
    return data


def set_dotted(data: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
    node[leaf] = value


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """", line L, column C: invalid YAML: <problem>" (1-based) from PyYAML's marks, for one error line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None and isinstance(getattr(exc, "position", None), int):  # a ReaderError: a forbidden character
        before = text[:exc.position]
        line, column = before.count("\n"), exc.position - (before.rfind("\n") + 1)
        problem = f"unacceptable character #x{exc.character:04x}" if isinstance(exc.character, int) else None
    elif mark is not None:
        line, column = mark.line, mark.column
    else:
        return f": invalid YAML: {str(exc).splitlines()[0]}"
    problem = problem or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        problem += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return f", line {line + 1}, column {column + 1}: invalid YAML: {problem}"
