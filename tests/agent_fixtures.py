"""Fixtures for agent tests: the real adb server (the adbutils wheel's binary) on a private port,
and real agents with virtual phones, against a real server."""

import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import adbutils
import pytest

from phonefleet.agent.agent import Agent
from phonefleet.agent.config import AgentSettings
from tests.conftest import RunningServer, eventually, free_port, open_url_job


@pytest.fixture(scope="session")
def adb_server() -> Iterator[int]:
    """A private adb server (the adbutils wheel's binary) for this test session only."""
    adb, port = str(adbutils.adb_path()), free_port()
    env = {**os.environ, "ADB_LIBUSB": "0", "ADB_EMU": "0"}  # no USB scan, no emulator port scan
    subprocess.run([adb, "-P", str(port), "start-server"], check=True, capture_output=True, timeout=60, env=env)
    yield port
    subprocess.run([adb, "-P", str(port), "kill-server"], check=False, capture_output=True, timeout=60)


@pytest.fixture(autouse=True)
def forget_dead_phones(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on the session's adb server: phones it left offline (virtual phones that died with an agent
    process the test killed, which adb keeps listing and dialling) are disconnected, so a later test sees only
    its own phones (``agent.devices()`` counted them)."""
    yield
    if "adb_server" not in request.fixturenames:
        return
    adb, port = str(adbutils.adb_path()), str(request.getfixturevalue("adb_server"))
    listed = subprocess.run([adb, "-P", port, "devices"], capture_output=True, text=True, timeout=60, check=False)
    for line in listed.stdout.splitlines()[1:]:
        serial, _, state = line.partition("\t")
        if state.strip() == "offline":
            subprocess.run([adb, "-P", port, "disconnect", serial], capture_output=True, timeout=60, check=False)


AgentFactory = Callable[..., Awaitable[Agent]]


async def _idle_phones(server: RunningServer, agent_name: str, count: int) -> bool:
    devices = await server.ok("GET", "/api/devices")
    return bool(sum(d["agent_name"] == agent_name and d["state"] == "idle" for d in devices) >= count)


@pytest.fixture
async def agent_factory(server: RunningServer, adb_server: int, tmp_path: Path) -> AsyncIterator[AgentFactory]:
    started: list[Agent] = []

    async def factory(name: str = "pc", virtual: int = 3, *, wait_idle: bool = True, **overrides: Any) -> Agent:
        """Start an agent; by default wait until the server lists all its phones as idle."""
        token = overrides.pop("token", None) or await server.add_agent(name)
        values: dict[str, Any] = {"server": server.url, "token": token, "state_dir": tmp_path / name,
                                  "virtual": virtual, "adb_port": adb_server, "probe_sec": 0.5, **overrides}
        agent = Agent(AgentSettings(**values))
        await agent.start()
        started.append(agent)
        if virtual and wait_idle:
            await eventually(lambda: _idle_phones(server, name, virtual), timeout=30)
        return agent

    yield factory
    for agent in started:
        await agent.stop()


async def stopped_mid_run(server: RunningServer, agent: Agent, url: str) -> tuple[dict[str, Any], int]:
    """Post a 60 s ``open_url`` job, wait until the agent runs it, and stop the agent there (its run journaled on
    its step): the job and the run's assignment id."""
    job: dict[str, Any] = await server.ok("POST", "/api/jobs", open_url_job(
        plan=[{"type": "open_url", "url": url, "duration_sec": 60}]))

    async def running() -> int | None:
        rows: list[dict[str, Any]] = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
        return int(rows[0]["id"]) if rows and rows[0]["status"] == "running" else None

    aid = await eventually(running, timeout=30)
    assert aid is not None
    await agent.stop()
    return job, aid
