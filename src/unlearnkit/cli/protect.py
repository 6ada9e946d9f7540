"""The protect command: make a classifier task's training set unlearnable (classifier/protect.py)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
import yaml

from unlearnkit.cli.common import _fail, _guard, app


@app.command()
def protect(task: str = typer.Option(..., help="classifier task source: digits, mnist1d, arrays, torchvision"),
            output: Path = typer.Option(..., help="the .npz to write (readable by the 'arrays' task source)"),
            task_options: Optional[List[str]] = typer.Option(None, "--task-option",
                                                            help="a task option KEY=VALUE, e.g. path=data.npz"),
            epsilon: float = typer.Option(8 / 255, help="ℓ∞ budget of the perturbation, in input units"),
            steps: int = typer.Option(200, help="projected AdamW ascent steps on the Bayes-error estimate"),
            lr: float = typer.Option(0.01, help="AdamW learning rate"),
            sigma: float = typer.Option(0.3, help="RBF bandwidth of the estimator"),
            embedding: str = typer.Option("model", help="features: model (a trained MLP's penultimate layer) or input"),
            seeds: int = typer.Option(2, help="models trained on each set to measure test accuracy (0: skip)"),
            quiet: bool = typer.Option(False, help="only the result lines")):
    """Perturb a task's training set within an ℓ∞ budget so that a model trained on it learns little (the Bayes-error
    objective of research/methods.md §19); write it as an .npz and report the test accuracy of models trained on the
    protected and on the clean set."""
    values = {}
    for item in task_options or []:
        if "=" not in item:
            _fail(f"--task-option {item!r} is not KEY=VALUE: write e.g. --task-option test_fraction=0.3")
        key, value = item.split("=", 1)
        values[key.strip()] = yaml.safe_load(value)
    if seeds < 0:
        _fail(f"--seeds must be >= 0, got {seeds}")

    def go():
        from unlearnkit.classifier.data import load_task
        from unlearnkit.classifier.options import check
        from unlearnkit.classifier.protect import (
            ProtectOptions,
            protect,
            protection_accuracy,
            save_protected,
        )
        from unlearnkit.errors import UnlearnkitError

        options = check(ProtectOptions, {"epsilon": epsilon, "steps": steps, "lr": lr, "sigma": sigma,
                                         "embedding": embedding}, "protect")
        if output.suffix != ".npz":
            raise UnlearnkitError(f"--output {output} must end in .npz (the arrays task source reads .npz files)")
        if not output.parent.is_dir():
            raise UnlearnkitError(f"--output: the folder {output.parent} does not exist; create it first")
        data = load_task(task, values)
        if not quiet:
            typer.echo(f"protecting {len(data.train)} training examples of {data.name} (epsilon {epsilon:g}, "
                       f"{steps} steps)", err=True)
        protected = protect(data, options)
        save_protected(output, data, protected.x)
        typer.echo(f"Bayes-error estimate: {protected.bayes_error[0]:.4f} clean -> {protected.bayes_error[-1]:.4f} "
                   f"protected")
        typer.echo(f"written: {output}")
        if seeds:
            accuracy = protection_accuracy(data, protected.x, seeds=list(range(seeds)))
            typer.echo(f"test accuracy of {seeds} model(s) trained on the clean set: {accuracy['clean']:.4f}; "
                       f"on the protected set: {accuracy['protected']:.4f}")

    _guard(go)
