"""The catalogue commands: methods and optimizers, with their parameters."""

from __future__ import annotations

from typing import Optional

import typer

from unlearnkit.cli.common import _guard, app


@app.command()
def methods(name: Optional[str] = typer.Argument(None, help="a method: show its parameters")):
    """List the unlearning methods (name, what it does, citation), or one method's parameters."""
    from unlearnkit.methods.registry import available, method_class

    if name is None:
        for listed, cls in available().items():
            kind = "" if cls.kind == "training" else f"[{cls.kind}] "  # inference-time: no weight updates
            typer.echo(f"{listed:<10} {kind}{cls.summary}\n{'':<10} {cls.citation}")
        return
    from unlearnkit.methods.params import rows

    cls = _guard(lambda: method_class(name))
    typer.echo(f"{cls.name}: {cls.summary}\nkind: {cls.kind}\n{cls.citation}\n")
    table = [("parameter", "type", "default", "range", "meaning"), *rows(cls.Params)]
    if len(table) == 1:
        typer.echo("no parameters")
        return
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])


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
    typer.echo(f"{cls.name}: {cls.summary}\n{cls.citation}\n"
               "learning_rate and weight_decay come from the train: section\n")
    table = [("parameter", "type", "default", "range", "meaning"), *rows(cls.Params)]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
