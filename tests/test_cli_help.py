"""Every ``--help`` of the three CLIs (walked command by command) shows each option's environment variable and
default, and no type noise (``<bool>``, ``<str>``) or text eaten by markup ("Listen address .")."""

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from phonefleet.agent.cli import cli as agent_cli
from phonefleet.cli import app as operator_cli
from phonefleet.server.cli import cli as server_cli

Command = Any  # typer's own click (typer._click): a command, or a group with .commands
CLIS = {"phonefleet": operator_cli, "phonefleet-agent": agent_cli, "phonefleet-server": server_cli}

# Settings the programs read from the environment themselves (pydantic settings), named in the help text.
READ_BY_SETTINGS = {
    ("phonefleet-server", "--host"): ("PHONEFLEET_HOST", "127.0.0.1"),
    ("phonefleet-server", "--port"): ("PHONEFLEET_PORT", "8700"),
    ("phonefleet-server", "--data-dir"): ("PHONEFLEET_DATA_DIR", ".phonefleet"),
    ("phonefleet-agent", "--server"): ("PHONEFLEET_AGENT_SERVER", "http://127.0.0.1:8700"),
    ("phonefleet-agent", "--state-dir"): ("PHONEFLEET_AGENT_STATE_DIR", ".phonefleet-agent"),
    ("phonefleet-agent", "--virtual"): ("PHONEFLEET_AGENT_VIRTUAL", "0"),
    ("phonefleet-agent", "--adb-port"): ("PHONEFLEET_AGENT_ADB_PORT", "5037"),
    ("phonefleet-agent", "--token-file"): ("PHONEFLEET_AGENT_TOKEN_FILE", None),
}


def commands(name: str) -> list[tuple[list[str], Command]]:
    """Every command path of a CLI, the root first."""
    found: list[tuple[list[str], Command]] = []

    def walk(path: list[str], command: Command) -> None:
        found.append((path, command))
        if hasattr(command, "commands"):
            for sub_name, sub in command.commands.items():
                walk([*path, sub_name], sub)

    walk([], typer.main.get_command(CLIS[name]))
    return found


CASES = [(name, path, command) for name in CLIS for path, command in commands(name)]


@pytest.mark.parametrize(("name", "path", "command"), CASES,
                         ids=[" ".join([n, *p]) for n, p, _ in CASES])
def test_help_shows_env_vars_and_defaults_without_type_noise(name: str, path: list[str],
                                                              command: Command) -> None:
    result = CliRunner().invoke(CLIS[name], [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # wrapped help, as one line
    noise = re.findall(r"<(?:bool|str|int|float|path|file|list\[[^\]]*\]|[a-z]+ range)>", result.output)
    assert not noise, f"type noise {noise} in:\n{result.output}"
    assert not re.search(r"\w \.(?:\s|$)", text), f"text eaten by markup in:\n{result.output}"
    for param in command.params:
        if param.param_type_name != "option" or param.hidden or not param.opts[0].startswith("--"):
            continue
        option = param.opts[0]
        envvar = getattr(param, "envvar", None)
        if envvar:
            assert f"env var: {envvar}" in text, f"{option}: no env var in:\n{result.output}"
        if (name, option) in READ_BY_SETTINGS:
            variable, default = READ_BY_SETTINGS[(name, option)]
            assert f"env var: {variable}" in text, f"{option}: no {variable} in:\n{result.output}"
            if default is not None:
                assert f"default: {default}" in text, f"{option}: no default in:\n{result.output}"
        elif (not param.is_flag and param.default is not None and param.show_default is not False
              and not getattr(param, "multiple", False)):
            assert "default: " in text, f"{option}: no default in:\n{result.output}"


def test_every_cli_is_walked() -> None:
    names = {" ".join([n, *p]) for n, p, _ in CASES}
    assert {"phonefleet jobs watch", "phonefleet jobs create", "phonefleet-agent devices",
            "phonefleet-agent virtual", "phonefleet-server agents add"} <= names
