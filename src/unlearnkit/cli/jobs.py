"""The commands that train or evaluate: demo, prepare, run, eval, sweep."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer

from unlearnkit.cli.common import (DataDirOpt, SetOpt, _check_inputs, _config, _guard, _overrides, _print_summary,
                                   _same_command, _setup_logging, app)


@app.command()
def demo(output_dir: Optional[Path] = typer.Option(None, help="where the run directory is written (default "
                                                   "runs/demo, or runs/demo-classifier with --track classifier)"),
         track: str = typer.Option("llm", help="llm: NPO on the tiny LM; classifier: every classifier method on 64 "
                                   "digits MLPs, scored against 64 retrained ones"),
         quiet: bool = typer.Option(False, help="no progress bars or log lines")):
    """Unlearn the built-in synthetic task with NPO on the tiny base, offline, and show the result (with --track
    classifier: every classifier method on the digits task, a leaderboard of methods)."""
    _setup_logging(quiet)
    if track not in ("llm", "classifier"):
        _guard(lambda: _fail_track(track))
    if track == "classifier":
        def go():
            from unlearnkit.classifier.config import demo_config
            from unlearnkit.classifier.pipeline import run_classifier

            return run_classifier(demo_config(str(output_dir or Path("runs/demo-classifier"))), progress=not quiet)

        _print_classifier_summary(_guard(go))
        return
    output_dir = output_dir or Path("runs/demo")
    from unlearnkit import unlearn
    from unlearnkit.demo import DEMO_CONFIG

    result = _guard(lambda: unlearn(DEMO_CONFIG, output_dir=str(output_dir), progress=not quiet))
    _print_summary(result.results)
    typer.echo(f"run directory: {result.run_dir}  (open {result.run_dir / 'report.html'})")


def _fail_track(track: str) -> None:
    from unlearnkit.errors import ConfigError

    raise ConfigError(f"--track {track!r}: use llm (the default) or classifier")


@app.command()
def prepare(config: Optional[Path] = typer.Argument(None, help="run config YAML (its task:, model:, prepare: sections)"),
            sets: Optional[List[str]] = SetOpt, data_dir: Optional[str] = DataDirOpt,
            base: Optional[str] = typer.Option(None, help="base model: tiny, smollm2-135m, a folder or a hub id"),
            force: bool = typer.Option(False, help="fine-tune again even when cached (rebuilds a damaged cache)"),
            quiet: bool = typer.Option(False)):
    """Fine-tune the target model (retain + forget) and the retain model (retain only); cached."""
    _setup_logging(quiet)

    def go():
        cfg = _config(config, sets, parameters=False, **{"task.options.data_dir": data_dir, "model.base": base})
        task = _check_inputs(cfg, config, prepared=not force)
        from unlearnkit.models.prepare import resolve_models

        return resolve_models(cfg, task, progress=not quiet, force=force)

    models = _guard(go, interrupted=lambda: "the finished epochs are kept; run the same command again to continue")
    typer.echo(f"target model: {models.target}\nretain model: {models.retain}")


@app.command()
def run(config: Path = typer.Argument(..., help="run config YAML"), sets: Optional[List[str]] = SetOpt,
        data_dir: Optional[str] = DataDirOpt,
        method: Optional[str] = typer.Option(None, help="method name (see `unlearnkit methods`)"),
        output_dir: Optional[str] = typer.Option(None, help="run directory to write"),
        resume: bool = typer.Option(False, help="continue an interrupted run from its last checkpoint"),
        quiet: bool = typer.Option(False)):
    """Run the unlearning job of CONFIG and write its run directory."""
    _setup_logging(quiet)

    parsed = {}

    def go():
        from unlearnkit.config import load_any_config

        cfg = load_any_config(config, _overrides(sets, **{"task.options.data_dir": data_dir, "method.name": method,
                                                         "output_dir": output_dir}), parameters=False)
        if getattr(cfg, "track", None) == "classifier":  # the classifier track (classifier/config.py): checked in full
            parsed.update(output_dir=Path(cfg.output_dir), classifier=True)
            from unlearnkit.classifier.pipeline import run_classifier

            return run_classifier(cfg, resume=resume, progress=not quiet)
        from unlearnkit.runio import check_output_dir

        check_output_dir(cfg.output_dir, resume)  # an existing or interrupted run directory: before anything is read
        _check_inputs(cfg, config)  # a bad config, data file or model folder stops here, before the heavy imports
        parsed["output_dir"] = Path(cfg.output_dir)
        from unlearnkit.pipeline import run as run_pipeline

        return run_pipeline(cfg, resume=resume, progress=not quiet)

    def interrupted() -> str:
        if "output_dir" not in parsed:
            return "nothing was written"
        final = parsed["output_dir"]
        partial = final.with_name(final.name + ".partial")
        if partial.exists() and parsed.get("classifier"):
            return f"the trained ensembles are cached; continue with: {_same_command('--resume')}"
        if partial.exists():
            return f"{partial} keeps the last checkpoint; continue with: {_same_command('--resume')}"
        if final.exists():  # only the attacks of the attacks: section were left
            return f"the run directory {final} is complete; attack it with: {shlex.join(['unlearnkit', 'attack', str(final)])}"
        return f"training had not started; continue with: {_same_command()}"

    result = _guard(go, interrupted)
    if result.results.get("track") == "classifier":
        _print_classifier_summary(result)
    elif result.results:
        _print_summary(result.results)
        typer.echo(f"run directory: {result.run_dir}")


def _print_classifier_summary(result) -> None:
    from unlearnkit.report.classifier import markdown_leaderboard

    typer.echo(markdown_leaderboard(result.results))
    typer.echo(f"run directory: {result.run_dir}  (open {result.run_dir / 'report.html'})")


@app.command("eval")
def eval_(model: str = typer.Option(..., "--model", help="model folder to evaluate"),
          config: Optional[Path] = typer.Option(None, help="config YAML whose task: section names the data"),
          retain: Optional[str] = typer.Option(None, help="retain model folder (enables forget_quality, privleak)"),
          output: Optional[Path] = typer.Option(None, help="write the results JSON here"),
          sets: Optional[List[str]] = SetOpt, data_dir: Optional[str] = DataDirOpt, quiet: bool = typer.Option(False)):
    """Evaluate a model folder on the configured task: the TOFU suite, or the MUSE suite for corpus tasks."""
    _setup_logging(quiet)

    def go():
        cfg = _config(config, sets, parameters=False, **({"task.options.data_dir": data_dir} if data_dir else {}))
        task = _check_inputs(cfg, config, models=[model] + ([retain] if retain is not None else []))
        from unlearnkit.data.formatting import QAFormatter
        from unlearnkit.evaluation.evaluator import Evaluator
        from unlearnkit.models.load import load_causal_lm
        from unlearnkit.runio import write_json

        loaded, tokenizer = load_causal_lm(model, trust_remote_code=cfg.model.trust_remote_code)
        formatter = QAFormatter(tokenizer, max_length=cfg.model.max_length, template=cfg.model.template)
        evaluator = Evaluator(task, formatter, cfg.eval, progress=not quiet)  # TOFU's suite, or MUSE's for raw text
        reference = None
        if retain is not None:
            reference = evaluator.evaluate_saved(retain, trust_remote_code=cfg.model.trust_remote_code,
                                                 intervals=False).reference_stats(required=False) or None
        result = evaluator.evaluate(loaded, reference)
        payload = {"model": str(model), "task": task.name, **result.to_dict()}
        if output is not None:
            write_json(output, payload)
        return payload

    payload = _guard(go)
    for name, value in payload["aggregates"].items():
        typer.echo(f"{name:<26}{'—' if value is None else f'{value:.6g}'}")
    if output is not None:
        typer.echo(f"results: {output}")



@app.command()
def sweep(config: Path = typer.Argument(..., help="run config YAML (its sweep: block, if any, sets the grid)"),
          grid: Optional[List[str]] = typer.Option(None, "--grid", help="KEY=V1,V2: values to try for a config key, "
                                                   "e.g. --grid method.params.beta=0.05,0.1 (repeatable)"),
          seeds: Optional[int] = typer.Option(None, help="seeds per configuration (default: the block's, else 1)"),
          workers: Optional[int] = typer.Option(None, help="worker processes (default 1: one trial after another)"),
          search: Optional[str] = typer.Option(None, help="grid (default) or optuna"),
          trials: Optional[int] = typer.Option(None, help="optuna: configurations to sample"),
          backend: Optional[str] = typer.Option(None, help="local (default: a process pool) or ray"),
          output_dir: Optional[Path] = typer.Option(None, help="sweep directory (default sweeps/<config name>)"),
          sets: Optional[List[str]] = SetOpt, quiet: bool = typer.Option(False)):
    """Run CONFIG over a grid (or an Optuna search) × seeds; write a leaderboard with the Pareto front and the best.

    Finished trials are kept: run the same command again to resume an interrupted sweep."""
    _setup_logging(quiet)
    directory = output_dir or Path("sweeps") / config.stem

    def go():
        from unlearnkit.config import read_config_data, set_dotted
        from unlearnkit.sweep.plan import sweep_settings
        from unlearnkit.sweep.runner import run_sweep

        base = read_config_data(config)
        for key, value in _overrides(sets).items():
            set_dotted(base, key, value)
        settings = sweep_settings(base.pop("sweep", None), grid, seeds=seeds, workers=workers, search=search,
                                  trials=trials, backend=backend)
        return run_sweep(base, settings, directory, progress=not quiet, log=typer.echo)

    board = _guard(go, interrupted=lambda: f"finished trials are kept; resume with: {_same_command()}")
    from unlearnkit.sweep.leaderboard import markdown

    typer.echo(markdown(board))
    typer.echo(f"leaderboard: {directory / 'leaderboard.html'}")
    if board["failed"]:
        raise typer.Exit(1)
