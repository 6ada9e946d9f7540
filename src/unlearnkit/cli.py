"""The ``unlearnkit`` command: a thin layer over :mod:`unlearnkit.pipeline` and the Python API.

Every user error is one line on stderr and exit status 2 (see :mod:`unlearnkit.errors`). Anything else is a bug:
one line, ``internal error: <type>: <message>``, and exit status 1; the traceback only with ``--debug`` (before the
command: ``unlearnkit --debug run ...``) or ``UNLEARNKIT_DEBUG=1``. Ctrl-C (SIGINT) and
SIGTERM stop a command the same way: one line on stderr saying what was kept and how to continue, exit status 130
(SIGINT) or 143 (SIGTERM), no traceback. Nothing needs a "safe point" of its own: checkpoints, prepared models and
results are written to a temporary name and renamed (:mod:`unlearnkit.training.checkpoint`, :mod:`unlearnkit.runio`),
so an interrupt at any instruction leaves the last complete ones, and temporary folders go in ``finally`` blocks.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
import yaml

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make a trained model forget specific data, and prove that it did.")

DEBUG_ENV = "UNLEARNKIT_DEBUG"
_options_given = {"debug": False}  # the global options of this invocation, set by _options on every call


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help=f"show the traceback of an internal error (or set "
                                        f"{DEBUG_ENV}=1)")):
    _options_given["debug"] = debug


def _debugging() -> bool:
    return _options_given["debug"] or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _internal_error(exc: Exception) -> None:
    """An unexpected exception: the traceback when debugging, else one line asking for it."""
    if _debugging():
        raise exc
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    typer.echo(f"internal error: {type(exc).__name__}: {first} (run with --debug or {DEBUG_ENV}=1 for the traceback, "
               "and report it)", err=True)
    raise typer.Exit(1) from None


def _setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("transformers", "accelerate", "datasets", "httpx", "absl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if "transformers" not in sys.modules:  # not imported yet (and not here: a bad input is reported before torch)
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"  # read when transformers configures its logger
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # per-file load/save bars: noise next to our own bars
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _overrides(sets: Optional[List[str]], **flags) -> dict:
    out = {}
    for item in sets or []:
        if "=" not in item:
            _fail(f"--set {item!r} is not KEY=VALUE: write e.g. --set train.learning_rate=1e-4")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value else None
    for key, value in flags.items():
        if value is not None:
            out[key] = value
    return out


def _config(path: Optional[Path], sets, *, parameters: bool = True, **flags):
    """The run config of ``path`` (or of the flags alone); only its structure when ``parameters`` is false, the
    method and optimizer parameters being left to :func:`_check_inputs`."""
    from unlearnkit.config import load_config, parse_config, set_dotted

    overrides = _overrides(sets, **flags)
    if path is not None:
        return load_config(path, overrides, parameters=parameters)
    data: dict = {}
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return parse_config(data, where="flags", parameters=parameters)


def _check_inputs(cfg, path: Path | None, models: list[str] | None = None):
    """After the config's structure, the cheap checks first: the task's data (read and validated) and the model
    folders (``models``, else the config's), then the method and optimizer parameters, whose registries import
    torch. Returns the task."""
    from unlearnkit.config import check_parameters
    from unlearnkit.data.sources import load_task
    from unlearnkit.models.folders import check_model_folder, check_model_folders

    task = load_task(cfg.task.source, **cfg.task.options)
    if models is None:
        check_model_folders(cfg)
    for folder in models or []:
        check_model_folder(folder)
    check_parameters(cfg, where=str(path) if path is not None else "flags")
    return task


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C's KeyboardInterrupt: the same clean-up runs."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def _guard(fn, interrupted: Optional[Callable[[], str]] = None):
    """Run ``fn`` turning user errors into a one-line message and exit status 2, and an interrupt (Ctrl-C, or SIGTERM
    handled like it) into one line, ``interrupted: <what interrupted() says>``, and exit status 130 or 143; any other
    exception is an internal error (one line and exit status 1, or the traceback with ``--debug``)."""
    from unlearnkit.errors import UnlearnkitError

    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:  # a SIGTERM the parent chose to ignore stays ignored
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return fn()
    except UnlearnkitError as exc:
        _fail(str(exc))
    except KeyboardInterrupt as exc:
        signum = signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT
        detail = interrupted() if interrupted is not None else None
        typer.echo(f"interrupted{': ' + detail if detail else ''}", err=True)
        raise typer.Exit(128 + signum) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001  (anything else is a bug: one line, or the traceback with --debug)
        _internal_error(exc)
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


def _same_command(*extra: str) -> str:
    """This command line, as the user can type it again (plus ``extra`` arguments it lacks)."""
    args = sys.argv[1:] + [a for a in extra if a not in sys.argv[1:]]
    return shlex.join(["unlearnkit", *args])


def _print_summary(results: dict) -> None:
    from unlearnkit.evaluation.metrics.registry import headline

    models = results.get("models", {})
    columns = [m for m in ("unlearned", "target", "retain") if m in models]
    typer.echo(f"{'metric':<22}" + "".join(f"{c:>14}" for c in columns))
    for name in headline():  # the metric table's headline metrics, of the run's suite (TOFU or MUSE)
        if not any(name in models[c]["aggregates"] for c in columns):
            continue  # a metric of the other suite (TOFU vs MUSE)
        cells = []
        for c in columns:
            v = models[c]["aggregates"].get(name)
            cells.append(f"{'—':>14}" if v is None else f"{v:>14.4g}")
        typer.echo(f"{name:<22}" + "".join(cells))


SetOpt = typer.Option(None, "--set", help="override a config key, e.g. --set train.learning_rate=1e-4 (repeatable)")
DataDirOpt = typer.Option(None, "--data-dir", help="TOFU folder (sets task.options.data_dir)")


@app.command()
def demo(output_dir: Path = typer.Option(Path("runs/demo"), help="where the run directory is written"),
         quiet: bool = typer.Option(False, help="no progress bars or log lines")):
    """Unlearn the built-in synthetic task with NPO on the tiny base, offline, and show the result."""
    _setup_logging(quiet)
    from unlearnkit import unlearn
    from unlearnkit.demo import DEMO_CONFIG

    result = _guard(lambda: unlearn(DEMO_CONFIG, output_dir=str(output_dir), progress=not quiet))
    _print_summary(result.results)
    typer.echo(f"run directory: {result.run_dir}  (open {result.run_dir / 'report.html'})")


@app.command()
def prepare(config: Optional[Path] = typer.Argument(None, help="run config YAML (its task:, model:, prepare: sections)"),
            sets: Optional[List[str]] = SetOpt, data_dir: Optional[str] = DataDirOpt,
            base: Optional[str] = typer.Option(None, help="base model: tiny, smollm2-135m, a folder or a hub id"),
            quiet: bool = typer.Option(False)):
    """Fine-tune the target model (retain + forget) and the retain model (retain only); cached."""
    _setup_logging(quiet)

    def go():
        cfg = _config(config, sets, parameters=False, **{"task.options.data_dir": data_dir, "model.base": base})
        task = _check_inputs(cfg, config)
        from unlearnkit.models.prepare import resolve_models

        return resolve_models(cfg, task, progress=not quiet)

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
        cfg = _config(config, sets, parameters=False, **{"task.options.data_dir": data_dir, "method.name": method,
                                                          "output_dir": output_dir})
        _check_inputs(cfg, config)  # a bad config, data file or model folder stops here, before the heavy imports
        parsed["output_dir"] = Path(cfg.output_dir)
        from unlearnkit.pipeline import run as run_pipeline

        return run_pipeline(cfg, resume=resume, progress=not quiet)

    def interrupted() -> str:
        if "output_dir" not in parsed:
            return "nothing was written"
        final = parsed["output_dir"]
        partial = final.with_name(final.name + ".partial")
        if partial.exists():
            return f"{partial} keeps the last checkpoint; continue with: {_same_command('--resume')}"
        if final.exists():  # only the attacks of the attacks: section were left
            return f"the run directory {final} is complete; attack it with: {shlex.join(['unlearnkit', 'attack', str(final)])}"
        return f"training had not started; continue with: {_same_command()}"

    result = _guard(go, interrupted)
    if result.results:
        _print_summary(result.results)
        typer.echo(f"run directory: {result.run_dir}")


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
def attack(run_dir: Path = typer.Argument(..., help="a finished run directory"),
           attacks: Optional[str] = typer.Option(None, "--attack", help="comma-separated: relearn,quantize,suffix,latent (default: "
                                                 "the run config's attacks: block, else both)"),
           sets: Optional[List[str]] = typer.Option(None, "--set", help="override an attack setting, e.g. "
                                                    "--set relearn.steps=20 (repeatable)"),
           quiet: bool = typer.Option(False)):
    """Attack a run's unlearned model (beside its target and retain models): does the knowledge come back?"""
    _setup_logging(quiet)

    def go():
        from unlearnkit.config import AttacksConfig, set_dotted
        from unlearnkit.finished_run import load_run

        cfg, _ = load_run(run_dir)  # a missing or incomplete run directory stops here, before the heavy imports
        data = (cfg.attacks or AttacksConfig()).model_dump()
        if attacks:
            data["run"] = [a.strip() for a in attacks.split(",") if a.strip()]
        for key, value in _overrides(sets).items():
            set_dotted(data, key, value)
        from pydantic import ValidationError

        try:
            chosen = AttacksConfig.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise UnlearnkitError(f"attack settings: {'.'.join(map(str, err['loc']))}: {err['msg']} "
                                  f"(got {err.get('input')!r})") from None
        from unlearnkit.attacks.suite import run_attacks

        return run_attacks(run_dir, chosen, progress=not quiet)

    from unlearnkit.errors import UnlearnkitError

    robustness = _guard(go)
    _print_robustness(robustness)
    typer.echo(f"updated {run_dir / 'results.json'} and {run_dir / 'report.html'}")


def _print_robustness(robustness: dict) -> None:
    if "relearn" in robustness:
        typer.echo("relearning: recovered fraction of what unlearning removed (per forget metric)")
        for who, metrics in robustness["relearn"]["recovered_fraction"].items():
            cells = ", ".join(f"{name}={'undefined' if v['value'] is None else _num(v['value'])}"
                              for name, v in metrics.items())
            typer.echo(f"  {who:<10} {cells}")
    if "quantize" in robustness:
        typer.echo("quantization: forget_Q_A_Prob / model_utility")
        for who, schemes in robustness["quantize"].items():
            cells = ", ".join(f"{scheme}: {_num(r['aggregates'].get('forget_Q_A_Prob'))} / "
                              f"{_num(r['aggregates'].get('model_utility'))}" for scheme, r in schemes.items())
            typer.echo(f"  {who:<10} {cells}")
    if "suffix" in robustness:
        typer.echo(f"GCG suffix {robustness['suffix']['search']['suffix_text']!r}: forget_Q_A_Prob with suffix / paraphrased")
        for who, r in robustness["suffix"]["models"].items():
            typer.echo(f"  {who:<10} {_num(r['with_suffix'].get('forget_Q_A_Prob'))} / "
                       f"{_num(r['paraphrased'].get('forget_Q_A_Prob'))}")
    if "latent" in robustness:
        typer.echo("latent perturbation: forget answer probability per ε")
        for who, probe in robustness["latent"].items():
            eps = probe.get("epsilon_fractions") or probe["epsilons"]
            typer.echo(f"  {who:<10} " + ", ".join(f"ε={e:g}: {_num(p)}" for e, p in zip(eps, probe["prob"])))


def _num(value) -> str:
    return "—" if value is None else f"{value:.4g}"


@app.command()
def compare(run_a: Path = typer.Argument(..., help="first run directory"),
            run_b: Path = typer.Argument(..., help="second run directory"),
            model: str = typer.Option("unlearned", help="which model's results: unlearned, target or retain"),
            output: Optional[Path] = typer.Option(None, help="write the comparison JSON here")):
    """Paired difference A − B of two runs' metrics on the same examples, with a 95% interval and p-value."""

    def go():
        from unlearnkit.finished_run import load_results

        a, b = load_results(run_a), load_results(run_b)  # both read before the heavy imports
        from unlearnkit.report.compare import compare_results
        from unlearnkit.runio import write_json

        table = compare_results(a, b, model=model)
        if output is not None:
            write_json(output, table)
        return table

    table = _guard(go)

    def fmt(v):
        return "—" if v is None else f"{v:.4g}"

    typer.echo(f"{'metric':<26}{'A':>10}{'B':>10}{'A − B':>10}  {'95% interval':<22}{'p':>8}")
    for name, row in table.items():
        interval = f"[{fmt(row['low'])}, {fmt(row['high'])}]" if "low" in row else ""
        typer.echo(f"{name:<26}{fmt(row['a']):>10}{fmt(row['b']):>10}{fmt(row.get('difference')):>10}  "
                   f"{interval:<22}{fmt(row.get('p_value')):>8}")


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


@app.command()
def verify(run_dir: Path = typer.Argument(..., help="a finished run directory (with its audit.json)"),
           recompute: bool = typer.Option(False, help="re-evaluate every score afresh instead of reading the "
                                                      "evaluation store"),
           quiet: bool = typer.Option(False)):
    """Check a run against its audit record: re-hash data, weights and config, re-evaluate the forget set."""
    _setup_logging(quiet)

    def go():
        from unlearnkit.audit import verify as verify_run

        return verify_run(run_dir, recompute=recompute, progress=not quiet)

    problems = _guard(go)
    for line in problems:
        typer.echo(f"mismatch: {line}")
    if problems:
        typer.echo(f"{run_dir}: {len(problems)} mismatch(es) with its audit record", err=True)
        raise typer.Exit(1)
    typer.echo(f"{run_dir}: every digest and the re-evaluated forget-set metrics match the audit record")


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a finished run directory"),
           to: Path = typer.Option(..., "--to", help="folder to write (must not exist, or be empty)")):
    """Write the unlearned model with its model card (README.md) and audit record to a folder ready for push_to_hub."""

    def go():
        from unlearnkit.report.export import export_run

        return export_run(run_dir, to)

    written = _guard(go)
    typer.echo(f"exported {written}")


@app.command()
def reapply(run_dir: Path = typer.Argument(..., help="a finished run directory holding update.safetensors (kfade)"),
            model: Path = typer.Option(..., "--model", help="model folder of the same architecture (e.g. the "
                                                            "target after further fine-tuning)"),
            output: Path = typer.Option(..., "--output", help="folder to write (must not exist, or be empty)"),
            trust_remote_code: bool = typer.Option(False, help="allow the model's own code")):
    """Add a run's stored weight update to another model of the same architecture and save the result."""

    def go():
        from unlearnkit.methods.updates import reapply as reapply_update

        return reapply_update(run_dir, model, output, trust_remote_code=trust_remote_code)

    written = _guard(go)
    typer.echo(f"re-applied the update of {run_dir} to {model}: {written}")


@app.command()
def methods(name: Optional[str] = typer.Argument(None, help="a method: show its parameters")):
    """List the unlearning methods (name, what it does, citation), or one method's parameters."""
    from unlearnkit.methods.registry import available, method_class

    if name is None:
        for listed, cls in available().items():
            typer.echo(f"{listed:<10} {cls.summary}\n{'':<10} {cls.citation}")
        return
    from unlearnkit.methods.params import rows

    cls = _guard(lambda: method_class(name))
    typer.echo(f"{cls.name}: {cls.summary}\n{cls.citation}\n")
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


def main() -> None:  # python -m unlearnkit
    app()
