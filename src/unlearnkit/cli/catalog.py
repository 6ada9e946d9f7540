"""The catalogue commands: methods and optimizers, with their parameters."""

from __future__ import annotations

from typing import Optional

import typer

from unlearnkit.cli.common import _guard, app


@app.command()
def methods(name: Optional[str] = typer.Argument(None, help="a method: show its parameters"),
            track: str = typer.Option("llm", help="llm (language models) or classifier")):
    """List the unlearning methods (name, what it does, citation), or one method's parameters."""
    if track == "classifier":
        return _classifier_methods(name)
    if track != "llm":
        _guard(lambda: _bad_track(track))
    from unlearnkit.methods.registry import available, method_class

    if name is None:
        for listed, cls in available().items():
            kind = "" if cls.kind == "training" else f"[{cls.kind}] "  # inference-time: no weight updates
            typer.echo(f"{listed:<10} {kind}{cls.summary}\n{'':<10} {cls.citation}")
        return
    from unlearnkit.methods.params import rows

    cls = _guard(lambda: method_class(name))
    _print_table(f"{cls.name}: {cls.summary}\nkind: {cls.kind}\n{cls.citation}", rows(cls.Params))


@app.command()
def optimizers(name: Optional[str] = typer.Argument(None, help="an optimizer: show its parameters")):
    """List the optimizers of train.optimizer (name, update rule, citation), or one optimizer's parameters."""
    from unlearnkit.optim.registry import available, optimizer_class

    if name is None:
        for listed, cls in available().items():
            typer.echo(f"{listed:<10} {cls.summary}\n{'':<10} {cls.citation}")
        return
    from unlearnkit.methods.params import rows

    cls = _guard(lambda: optimizer_class(name))
    _print_table(f"{cls.name}: {cls.summary}\n{cls.citation}\n"
                 "learning_rate and weight_decay come from the train: section", rows(cls.Params))


def _bad_track(track: str) -> None:
    from unlearnkit.errors import ConfigError

    raise ConfigError(f"unknown track {track!r}: use --track llm or --track classifier")


def _classifier_methods(name: Optional[str]) -> None:
    """The classifier track's methods (``classifier.unlearn``), or one method's options."""
    from unlearnkit.classifier.unlearn import PARAMS, SUMMARIES
    from unlearnkit.methods.params import rows

    if name is None:
        for listed in PARAMS:
            typer.echo(f"{listed:<16} {SUMMARIES[listed]}")
        return
    if name not in PARAMS:
        _guard(lambda: _unknown_classifier_method(name, PARAMS))
    _print_table(f"{name}: {SUMMARIES[name]}", rows(PARAMS[name]))


def _unknown_classifier_method(name: str, known) -> None:
    from unlearnkit.errors import ConfigError

    raise ConfigError(f"unknown classifier method {name!r}: use one of {', '.join(known)}")


def _print_table(title: str, parameters: list) -> None:
    typer.echo(title + "\n")
    if not parameters:
        typer.echo("no parameters")
        return
    table = [("parameter", "type", "default", "range", "meaning"), *parameters]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])

