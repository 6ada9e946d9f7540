"""One error path (issue #20): every expected failure is an :class:`UnlearnkitError` subclass saying which input is
at fault, printed by the CLI as ``error: <message>`` with exit status 2; any other exception is a bug, printed as one
``internal error:`` line with exit status 1, and its traceback only with ``--debug`` or ``UNLEARNKIT_DEBUG=1``."""


import pytest
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.errors import (
    CacheError,
    ConfigError,
    DataError,
    ModelError,
    RunDirectoryError,
    UnlearnkitError,
)

runner = CliRunner()


class _Bug(RuntimeError):
    pass


def _plant_bug(monkeypatch):
    """``unlearnkit compare`` reads both runs first; make that read fail as a bug would (not an UnlearnkitError)."""
    from unlearnkit import finished_run

    def broken(run_dir):
        raise _Bug("list index out of range\nsecond line of the message")

    monkeypatch.setattr(finished_run, "load_results", broken)


def test_internal_error_is_one_line_and_exit_1(monkeypatch):
    monkeypatch.delenv("UNLEARNKIT_DEBUG", raising=False)
    _plant_bug(monkeypatch)
    result = runner.invoke(app, ["compare", "a", "b"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stderr == ("internal error: _Bug: list index out of range (run with --debug or UNLEARNKIT_DEBUG=1 "
                             "for the traceback, and report it)\n")


@pytest.mark.parametrize("value", ["0", "", "false"])
def test_debug_variable_off_keeps_the_one_line(monkeypatch, value):
    _plant_bug(monkeypatch)
    result = runner.invoke(app, ["compare", "a", "b"], env={"UNLEARNKIT_DEBUG": value})
    assert result.exit_code == 1 and result.stderr.startswith("internal error: _Bug: "), result.output


@pytest.mark.parametrize("argv, env", [(["--debug", "compare", "a", "b"], {}),
                                       (["compare", "a", "b"], {"UNLEARNKIT_DEBUG": "1"})])
def test_debug_shows_the_traceback(monkeypatch, argv, env):
    """With --debug (a global option, before the command) or UNLEARNKIT_DEBUG=1 the exception itself propagates,
    so Python prints its traceback; the runner hands it back as ``result.exception``."""
    monkeypatch.delenv("UNLEARNKIT_DEBUG", raising=False)
    _plant_bug(monkeypatch)
    result = runner.invoke(app, argv, env=env)
    assert isinstance(result.exception, _Bug), result.output
    assert result.exc_info[2] is not None  # the traceback
    assert "internal error" not in result.output


def test_debug_does_not_stick_to_the_next_invocation(monkeypatch):
    monkeypatch.delenv("UNLEARNKIT_DEBUG", raising=False)
    _plant_bug(monkeypatch)
    runner.invoke(app, ["--debug", "compare", "a", "b"])
    assert runner.invoke(app, ["compare", "a", "b"]).exit_code == 1


def test_user_errors_stay_exit_2_with_debug(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["--debug", "compare", "runs/missing", "runs/b"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: run directory runs/missing does not exist")


# Each kind of input fault raises its own subclass (callers of the Python API can catch one kind).

def test_config_errors_are_config_errors(tmp_path):
    from unlearnkit.config import load_config, parse_config

    (tmp_path / "c.yaml").write_text("method:\n  name: [npo\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="unknown config key"):
        parse_config({"trian": {}})


def test_data_errors_are_data_errors(tmp_path):
    from unlearnkit.data.custom import load_qa_file

    path = tmp_path / "forget.jsonl"
    path.write_text('{"question": "Q?", "answer": null}\n')
    with pytest.raises(DataError, match="'answer' is null"):
        load_qa_file(path)


def test_model_errors_are_model_errors(tmp_path):
    from unlearnkit.models.folders import check_model_files, check_safetensors_weights

    with pytest.raises(ModelError, match="has no weights"):
        check_safetensors_weights(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ModelError, match="unreadable JSON") as caught:
        check_model_files(tmp_path)
    assert not isinstance(caught.value, CacheError)


def test_a_damaged_cached_model_is_a_cache_error(tmp_path):
    """A folder of the prepared-model cache (<cache>/prepared/<key>/target) is unlearnkit's own: the error says
    which folder to delete so that prepare rebuilds it."""
    from unlearnkit.models.folders import check_model_files

    folder = tmp_path / "prepared" / "abc123" / "target"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{oops")
    with pytest.raises(CacheError, match=r"delete .*abc123 and run `unlearnkit prepare` again"):
        check_model_files(folder)


def test_run_directory_errors_are_run_directory_errors(tmp_path):
    from unlearnkit.attacks.suite import load_run
    from unlearnkit.pipeline import RunDirectory
    from unlearnkit.report.compare import load_results

    with pytest.raises(RunDirectoryError, match="does not exist"):
        load_results(tmp_path / "missing")
    with pytest.raises(RunDirectoryError, match="has no config.yaml"):
        load_run(tmp_path)
    (tmp_path / "run").mkdir()
    with pytest.raises(RunDirectoryError, match="already exists"):
        RunDirectory(tmp_path / "run", resume=False)


def test_every_kind_is_an_unlearnkit_error_with_exit_2():
    for kind in (ConfigError, DataError, ModelError, CacheError, RunDirectoryError):
        assert issubclass(kind, UnlearnkitError) and kind.exit_code == 2
