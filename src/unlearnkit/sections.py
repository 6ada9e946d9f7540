"""Which section of a nested pydantic settings model a validation error points into: the config, the classifier
config and the classifier options all name "the valid keys here" from it."""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel


def owning_section(model: type[BaseModel], loc: Sequence) -> type[BaseModel]:
    """The model whose field ``loc`` (a pydantic error location) ends at: ``model`` for a top-level key, else, step
    by step, the model (or the first model of a union or ``Optional``) that each field on the path is typed as."""
    section = model
    for part in loc[:-1]:
        field = section.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        nested = [a for a in (*getattr(annotation, "__args__", ()), annotation)
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        section = nested[0] if nested else section
    return section
