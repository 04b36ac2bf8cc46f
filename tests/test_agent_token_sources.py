"""The agent's token comes from the environment, a token file or agent.toml, never has to be on the
command line, and a file holding it must be private (0600): ``phonefleet-agent run`` as a real process."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningServer, eventually


def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHONEFLEET_AGENT_")}
    return {**env, **extra}


def run_args(server: RunningServer, state_dir: Path, adb_port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "phonefleet.agent.cli", "run", "--server", server.url, "--state-dir",
            str(state_dir), "--adb-port", str(adb_port), *extra]


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def start_agent(args: list[str], env: dict[str, str], log: Path) -> "subprocess.Popen[bytes]":
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


async def connects(server: RunningServer, name: str, args: list[str], env: dict[str, str],
                   log: Path) -> str:
    """Start the agent, wait until the server sees it connected, stop it; returns what it printed."""
    proc = await asyncio.to_thread(start_agent, args, env, log)
    try:
        async def connected() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited {proc.returncode}: {await asyncio.to_thread(log.read_text)}")
            return any(a["name"] == name and a["connected"] for a in await server.ok("GET", "/api/agents"))

        await eventually(connected, timeout=30, interval=0.2)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
    return await asyncio.to_thread(log.read_text)


def refused(args: list[str], env: dict[str, str], *words: str) -> str:
    """The agent exits non-zero at once with a one-line reason naming ``words``, no traceback."""
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)
    return done.stderr


async def test_agent_takes_its_token_from_the_environment(server: RunningServer, adb_server: int,
                                                          tmp_path: Path) -> None:
    token = await server.add_agent("by-env")
    out = await connects(server, "by-env", run_args(server, tmp_path / "s", adb_server),
                         agent_env(PHONEFLEET_AGENT_TOKEN=token), tmp_path / "agent.log")
    assert token not in out


async def test_agent_takes_its_token_from_a_private_token_file(server: RunningServer, adb_server: int,
                                                               tmp_path: Path) -> None:
    token = await server.add_agent("by-file")
    path = private(tmp_path / "secret" / "token", token + "\n")
    await connects(server, "by-file", run_args(server, tmp_path / "s", adb_server, "--token-file", str(path)),
                   agent_env(), tmp_path / "agent.log")
    token = await server.add_agent("by-env-file")
    path = private(tmp_path / "secret" / "token2", token)
    await connects(server, "by-env-file", run_args(server, tmp_path / "s2", adb_server),
                   agent_env(PHONEFLEET_AGENT_TOKEN_FILE=str(path)), tmp_path / "agent2.log")


async def test_agent_takes_its_token_from_a_private_agent_toml(server: RunningServer, adb_server: int,
                                                               tmp_path: Path) -> None:
    token = await server.add_agent("by-toml")
    state = tmp_path / "s"
    private(state / "agent.toml", f'token = "{token}"\n')
    await connects(server, "by-toml", run_args(server, state, adb_server), agent_env(), tmp_path / "agent.log")
    token = await server.add_agent("by-toml-file")
    state = tmp_path / "s2"
    private(state / "agent.toml", 'token_file = "token"\n', 0o644)  # no secret in it: may be readable
    private(state / "token", token)  # relative to agent.toml's folder
    await connects(server, "by-toml-file", run_args(server, state, adb_server), agent_env(), tmp_path / "agent2.log")


async def test_token_on_the_command_line_still_works_with_a_warning(server: RunningServer, adb_server: int,
                                                                     tmp_path: Path) -> None:
    token = await server.add_agent("by-flag")
    out = await connects(server, "by-flag", run_args(server, tmp_path / "s", adb_server, "--token", token),
                         agent_env(), tmp_path / "agent.log")
    assert "--token is visible" in out


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=["644", "640", "604", "660"])
def test_token_file_others_can_read_is_refused_saying_chmod_600(tmp_path: Path, mode: int) -> None:
    path = private(tmp_path / "token", "pfagt_secret", mode)
    args = [sys.executable, "-m", "phonefleet.agent.cli", "run", "--state-dir", str(tmp_path / "s")]
    message = refused([*args, "--token-file", str(path)], agent_env(), f"chmod 600 {path}", f"{mode:04o}")
    assert "pfagt_secret" not in message
    refused(args, agent_env(PHONEFLEET_AGENT_TOKEN_FILE=str(path)), f"chmod 600 {path}")


def test_agent_toml_holding_a_token_others_can_read_is_refused(tmp_path: Path) -> None:
    toml = private(tmp_path / "s" / "agent.toml", 'token = "pfagt_secret"\n', 0o644)
    args = [sys.executable, "-m", "phonefleet.agent.cli", "run", "--state-dir", str(tmp_path / "s")]
    message = refused(args, agent_env(), f"chmod 600 {toml}", "agent.toml")
    assert "pfagt_secret" not in message


@pytest.mark.parametrize("case", ["nothing", "missing-file", "empty-file", "both-in-one-place"])
def test_missing_or_unusable_token_is_a_clear_error(tmp_path: Path, case: str) -> None:
    args = [sys.executable, "-m", "phonefleet.agent.cli", "run", "--state-dir", str(tmp_path / "s")]
    if case == "nothing":
        refused(args, agent_env(), "no agent token", "PHONEFLEET_AGENT_TOKEN", "--token-file")
    elif case == "missing-file":
        refused([*args, "--token-file", str(tmp_path / "nope")], agent_env(), "cannot read", "nope")
    elif case == "empty-file":
        path = private(tmp_path / "empty", "\n")
        refused([*args, "--token-file", str(path)], agent_env(), "empty")
    else:
        path = private(tmp_path / "token", "pfagt_x")
        refused(args, agent_env(PHONEFLEET_AGENT_TOKEN="pfagt_y", PHONEFLEET_AGENT_TOKEN_FILE=str(path)),
                "both a token and a token file")


def test_help_shows_the_token_file_and_hides_the_token_flag() -> None:
    done = subprocess.run([sys.executable, "-m", "phonefleet.agent.cli", "run", "--help"], env=agent_env(),
                          capture_output=True, text=True, timeout=60, check=True)
    assert "--token-file" in done.stdout
    assert "--token " not in done.stdout and "--token\n" not in done.stdout
