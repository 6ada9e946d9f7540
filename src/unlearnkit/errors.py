"""User-facing errors.

Every problem a user can fix (a missing folder, a bad config key, an empty forget set) is raised as an
:class:`UnlearnkitError` with a one-line message that names the problem and the fix. The CLI prints
``error: <message>`` and exits with status 2. Anything else is a bug: the CLI prints one ``internal error:`` line
(exit status 1), and the traceback only with ``--debug`` or ``UNLEARNKIT_DEBUG=1``.

The subclasses say which input is at fault, so callers of the Python API can catch one kind; the message alone
is what the user sees:

- :class:`ConfigError`: the run configuration (YAML, ``--set`` overrides, method, optimizer and training settings);
- :class:`DataError`: a task's data files or what they hold;
- :class:`ModelError`: a model folder or hub id (missing, pickled weights, damaged ``config.json``/safetensors);
- :class:`CacheError`: something unlearnkit cached itself (prepared models, evaluation store) is missing or damaged;
- :class:`RunDirectoryError`: a run directory to write (exists, interrupted) or to read (missing, incomplete).
"""


class UnlearnkitError(Exception):
    """A problem with the user's input: the message says what is wrong and how to fix it."""

    exit_code = 2


class ConfigError(UnlearnkitError):
    """The run configuration: a key, a value, a method/optimizer parameter, the YAML file itself."""


class DataError(UnlearnkitError):
    """A task's data: a missing or unreadable file, a bad row, an empty split."""


class ModelError(UnlearnkitError):
    """A model given by the user: a missing folder, no tokenizer, pickled or damaged weights."""


class CacheError(UnlearnkitError):
    """What unlearnkit cached (prepared models, evaluation results) is missing or damaged: the message says how
    to rebuild it."""


class RunDirectoryError(UnlearnkitError):
    """A run directory: one to write already exists or holds an interrupted run; one to read is missing or
    incomplete."""
