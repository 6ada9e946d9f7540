"""`unlearnkit methods` lists the methods; `unlearnkit methods NAME` shows one method's parameters."""

import re

from typer.testing import CliRunner

from unlearnkit.cli import app

runner = CliRunner()


def test_methods_npo_prints_every_parameter_with_type_default_and_range():
    result = runner.invoke(app, ["methods", "npo"])
    assert result.exit_code == 0, result.output
    assert "arXiv:2404.05868" in result.stdout
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    expected = {  # name: type, default, range, then the meaning
        "beta": r"float\s+0\.1\s+> 0\s+inverse temperature",
        "forget_weight": r"float\s+1\.0\s+>= 0\s+weight of the forget",
        "retain_weight": r"float\s+1\.0\s+>= 0\s+weight of the retain",
        "retain_loss": r"'nll', 'kl' or null\s+'nll'\s+—\s+retain term",
    }
    for name, pattern in expected.items():
        assert re.match(rf"{name}\s+{pattern}", rows[name]), rows.get(name)


def test_a_method_without_parameters():
    result = runner.invoke(app, ["methods", "ga"])
    assert result.exit_code == 0 and "no parameters" in result.stdout


def test_unknown_method_name_is_one_line_and_exit_2():
    result = runner.invoke(app, ["methods", "nop"])
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith("error: unknown method 'nop'") and "\n" not in message and "npo" in message


def test_the_classifier_track_lists_every_classifier_method_and_their_options():
    from unlearnkit.classifier.unlearn import PARAMS

    listed = runner.invoke(app, ["methods", "--track", "classifier"])
    assert listed.exit_code == 0, listed.output
    assert [line.split()[0] for line in listed.stdout.splitlines() if line.strip()] == list(PARAMS)
    one = runner.invoke(app, ["methods", "--track", "classifier", "neggrad_plus"])
    assert one.exit_code == 0, one.output
    rows = {line.split()[0]: line for line in one.stdout.splitlines() if line.strip()}
    field = PARAMS["neggrad_plus"].model_fields["beta"]
    assert re.match(rf"beta\s+float\s+{field.default}\s", rows["beta"])


def test_an_unknown_classifier_method_or_track_is_one_line_and_exit_2():
    for args, says in ((["methods", "--track", "classifier", "nop"], "unknown classifier method 'nop'"),
                       (["methods", "--track", "vision"], "unknown track 'vision'")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.stderr.strip().startswith(f"error: {says}")
        assert "\n" not in result.stderr.strip()
