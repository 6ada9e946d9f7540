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
