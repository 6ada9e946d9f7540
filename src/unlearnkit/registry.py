"""Classes registered by the names users say, found without a list: the methods' and the optimizers' registries.

A :class:`Registry` imports every module of its package the first time it is asked (and each time after, which is
free once imported), so adding an entry is one new file whose class carries ``@registry.register``.
"""

from __future__ import annotations

import importlib
import pkgutil

from unlearnkit.errors import UnlearnkitError


class Registry:
    """Classes with a ``name`` attribute, by name; ``kind`` and ``command`` word the unknown-name error."""

    def __init__(self, kind: str, package: str, command: str):
        self.kind, self.package, self.command = kind, package, command
        self.entries: dict[str, type] = {}

    def register(self, cls: type) -> type:
        if cls.name in self.entries:
            raise ValueError(f"{self.kind} name {cls.name!r} registered twice")
        self.entries[cls.name] = cls
        return cls

    def available(self) -> dict[str, type]:
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
        return dict(sorted(self.entries.items()))

    def get(self, name: str) -> type:
        """The registered class called ``name``; an unknown name is a user error listing the valid ones."""
        entries = self.available()
        if name not in entries:
            raise UnlearnkitError(unknown_name(self.kind, name, entries, self.command))
        return entries[name]


def unknown_name(kind: str, name: str, names, command: str) -> str:
    """The one line for a name no entry has (shared with the catalogue's check, :mod:`unlearnkit.catalogue`)."""
    return f"unknown {kind} {name!r}: choose one of {', '.join(sorted(names))} (see `unlearnkit {command}`)"
