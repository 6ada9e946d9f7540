"""The ``unlearnkit`` command: a thin layer over :mod:`unlearnkit.pipeline` and the Python API.

Every user error is one line on stderr and exit status 2 (see :mod:`unlearnkit.errors`). Anything else is a bug:
one line, ``internal error: <type>: <message>``, and exit status 1; the traceback only with ``--debug`` (before the
command: ``unlearnkit --debug run ...``) or ``UNLEARNKIT_DEBUG=1``. Ctrl-C (SIGINT) and
SIGTERM stop a command the same way: one line on stderr saying what was kept and how to continue, exit status 130
(SIGINT) or 143 (SIGTERM), no traceback. Nothing needs a "safe point" of its own: checkpoints, prepared models and
results are written to a temporary name and renamed (:mod:`unlearnkit.training.checkpoint`, :mod:`unlearnkit.runio`),
so an interrupt at any instruction leaves the last complete ones, and temporary folders go in ``finally`` blocks.
"""

from unlearnkit.cli import jobs, runs, catalog, protect  # noqa: F401,I001  (each registers its commands, in this order in --help)
from unlearnkit.cli.common import _print_summary, app

__all__ = ["app", "main", "_print_summary"]


def main() -> None:  # python -m unlearnkit
    app()
