"""The package's layers: imports run downward only, and no module imports itself back through others.

Evaluation has three floors — ``scoring/`` (the engine), ``metrics/`` (pure functions of scores), ``suites/`` (what to
plan and report) — with ``evaluator.py`` on top; each floor imports only the floors below it. The stages of a run
(pipeline, attacks, report, cli) sit above evaluation, which imports none of them. Imports are read from the source
(module level and inside functions alike). For circles, importing a package itself (its ``__init__``: the version,
a registry importing its package to find its entries) is not a dependency on the package's modules.
"""

import ast
from pathlib import Path

import pytest

import unlearnkit

PACKAGE = Path(unlearnkit.__file__).parent
FLOORS = ["unlearnkit.evaluation.scoring", "unlearnkit.evaluation.metrics", "unlearnkit.evaluation.suites",
          "unlearnkit.evaluation.evaluator"]
ABOVE_EVALUATION = ["unlearnkit.pipeline", "unlearnkit.attacks", "unlearnkit.report", "unlearnkit.cli",
                    "unlearnkit.training", "unlearnkit.methods"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        found = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unlearnkit"):
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("unlearnkit"))
        graph[name] = found
    # keep only names that are modules of the package (``from x import name`` may name a function)
    return {name: {i for i in found if i in graph and i != name} for name, found in graph.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_evaluation_floors_import_only_downward():
    graph = _imports()
    for name, imported in graph.items():
        for level, floor in enumerate(FLOORS):
            if _within(name, floor):
                higher = [i for i in imported for up in FLOORS[level + 1:] if _within(i, up)]
                assert not higher, f"{name} imports the floor above it: {higher}"
        if _within(name, "unlearnkit.evaluation"):
            above = [i for i in imported for up in ABOVE_EVALUATION if _within(i, up)]
            assert not above, f"{name} imports a later stage of the run: {above}"


def test_no_import_circle():
    packages = {_module_name(path) for path in PACKAGE.rglob("__init__.py")}
    graph = {name: found - packages for name, found in _imports().items() if name not in packages}

    def reaches(start: str, goal: str) -> bool:
        seen, pending = set(), list(graph[start])
        while pending:
            current = pending.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                pending.extend(graph.get(current, ()))
        return False

    circles = [name for name in graph if reaches(name, name)]
    assert circles == []


@pytest.mark.parametrize("folder", ["scoring", "metrics", "suites"])
def test_evaluation_files_stay_small(folder):
    for path in (PACKAGE / "evaluation" / folder).glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
