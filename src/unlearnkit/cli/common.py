"""What every command shares: the app, the error and interrupt guard, config loading and the first checks."""

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


def _check_inputs(cfg, path: Path | None, models: list[str] | None = None, prepared: bool = True):
    """After the config's structure, the cheap checks first: the method, optimizer and metric names and parameters
    the static catalogue knows, the task's data (read and validated) and the model folders (``models``, else the
    config's) with, unless ``prepared`` is false, the prepared models already cached for the config (their files'
    digests); then the full check of the parameters, whose registries import torch. Returns the task."""
    from unlearnkit.config import check_catalogued, check_parameters
    from unlearnkit.data.sources import load_task
    from unlearnkit.models.folders import check_model_folder, check_model_folders

    where = str(path) if path is not None else "flags"
    check_catalogued(cfg, where)
    task = load_task(cfg.task.source, **cfg.task.options)
    if models is None:
        check_model_folders(cfg)
        if prepared:
            from unlearnkit.models.prepared import check_prepared
            from unlearnkit.runio import default_cache_dir

            check_prepared(cfg, task, default_cache_dir())  # the cached target and retain models, if any
    for folder in models or []:
        check_model_folder(folder)
    check_parameters(cfg, where)
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
