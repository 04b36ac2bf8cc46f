"""Crashes: an agent SIGKILLed with results in its outbox, or in the middle of a step. A finished run is
never recorded as lost, and a run cut short is never silently run again."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from phonefleet.sim.netfault import TcpFaultProxy
from tests.agent_processes import AgentProcess, agent_cli, finished_in_outbox, journal_size
from tests.conftest import RunningServer, eventually

Factory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def proxied(server_factory: Factory) -> AsyncIterator[Callable[..., Awaitable[tuple[RunningServer,
                                                                                          TcpFaultProxy]]]]:
    """A server and a TCP proxy in front of it, through which agents reach it."""
    proxies: list[TcpFaultProxy] = []

    async def make(**settings: Any) -> tuple[RunningServer, TcpFaultProxy]:
        server = await server_factory(**settings)
        port = urlsplit(server.url).port
        assert port is not None
        proxy = TcpFaultProxy("127.0.0.1", port)
        await proxy.start()
        proxies.append(proxy)
        return server, proxy

    yield make
    for proxy in proxies:
        await proxy.stop()


async def idle_phones(server: RunningServer, agent: str, count: int) -> bool:
    devices = await server.ok("GET", "/api/devices")
    return bool(sum(d["agent_name"] == agent and d["state"] == "idle" for d in devices) == count)


async def assignments(server: RunningServer, job_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await server.ok("GET", f"/api/jobs/{job_id}/assignments"))["items"]
    return items


def job_body(url: str, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"title": "crash", "plan": [{"type": "open_url", "url": url, "duration_sec": seconds}],
            "target_type": "device_count", "target_value": 1, **extra}


def opened(state: Path, url: str) -> int:
    """How often the agent's (new) virtual phones were sent this URL since the agent started."""
    status = agent_cli(state, "status", "--json")
    return sum(url in command for phone in status["virtual"] for command in phone["recent"])


async def test_a_run_finished_while_its_agent_was_cut_off_is_completed_not_lost(
        proxied: Callable[..., Awaitable[tuple[RunningServer, TcpFaultProxy]]], adb_server: int,
        tmp_path: Path) -> None:
    server, proxy = await proxied(agent_grace_sec=2.0)
    token = await server.add_agent("pc")
    state = tmp_path / "agent"
    agent = AgentProcess(proxy.url, token, state, adb_server, virtual=2)
    try:
        await eventually(lambda: idle_phones(server, "pc", 2), timeout=45)
        url = "https://example.com/cut-off"
        job = await server.ok("POST", "/api/jobs", {**job_body(url, 3), "target_type": "all_devices"})
        assert job["target_count"] == 2

        async def both_running() -> bool:
            return [r["status"] for r in await assignments(server, job["id"])] == ["running", "running"]

        await eventually(both_running, timeout=20)
        proxy.refuse()  # the cable is pulled while both phones run
        await eventually(lambda: finished_in_outbox(state, 2), timeout=20)  # done on the phones, kept
        agent.kill()

        async def declared_lost() -> dict[str, Any] | None:
            current = await server.ok("GET", f"/api/jobs/{job['id']}")
            return current if current["failed_count"] == 2 else None

        lost = await eventually(declared_lost, timeout=20)  # past the grace: the server's guess
        assert lost is not None
        assert (lost["status"], lost["completed_count"]) == ("completed", 0)
        proxy.heal()
        agent = AgentProcess(proxy.url, token, state, adb_server, virtual=2)

        async def settled() -> dict[str, Any] | None:
            current = await server.ok("GET", f"/api/jobs/{job['id']}")
            return current if current["completed_count"] == 2 else None

        done = await eventually(settled, timeout=45)
        assert done is not None
        assert (done["status"], done["failed_count"]) == ("completed", 0)
        rows = await assignments(server, job["id"])
        assert [(r["status"], r["attempt"], r["error_code"]) for r in rows] == [("completed", 1, None)] * 2
        await eventually(lambda: finished_in_outbox(state, 0, exact=True), timeout=20)
        assert await asyncio.to_thread(opened, state, url) == 0, "nothing was run again"
    finally:
        agent.kill()


async def test_an_agent_killed_mid_step_reports_the_run_interrupted_and_it_is_retried(
        server_factory: Factory, adb_server: int, tmp_path: Path) -> None:
    server = await server_factory(agent_grace_sec=60.0)  # back well within its grace: no "lost" guess
    token = await server.add_agent("pc")
    state = tmp_path / "agent"
    agent = AgentProcess(server.url, token, state, adb_server, virtual=2)
    try:
        await eventually(lambda: idle_phones(server, "pc", 2), timeout=45)
        url = "https://example.com/interrupted"
        job = await server.ok("POST", "/api/jobs", job_body(url, 60, max_retries=1))

        async def journaled() -> bool:
            rows = await assignments(server, job["id"])
            return rows[0]["status"] == "running" and await asyncio.to_thread(journal_size, state) == 1

        await eventually(journaled, timeout=20)
        agent.kill()  # in the middle of its one minute on the page
        agent = AgentProcess(server.url, token, state, adb_server, virtual=2)

        async def retried() -> list[dict[str, Any]] | None:
            rows = await assignments(server, job["id"])
            return rows if len(rows) == 2 and rows[1]["status"] == "running" else None

        retries = await eventually(retried, timeout=45)
        assert retries is not None
        first, second = retries
        assert (first["status"], first["error_code"], first["retried"]) == ("failed", "interrupted", True)
        assert "step 1 (open_url)" in first["error"]
        assert (second["attempt"], second["slot_id"]) == (2, first["id"])
        assert await asyncio.to_thread(opened, state, url) == 1, "only the recorded retry ran after the crash"
        await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "cancelled"})
    finally:
        agent.kill()


async def test_on_interrupt_rerun_runs_the_plan_again_and_records_the_rerun(
        server_factory: Factory, adb_server: int, tmp_path: Path) -> None:
    server = await server_factory(agent_grace_sec=60.0)
    token = await server.add_agent("pc")
    state = tmp_path / "agent"
    agent = AgentProcess(server.url, token, state, adb_server, virtual=1)
    try:
        await eventually(lambda: idle_phones(server, "pc", 1), timeout=45)
        url = "https://example.com/rerun"
        job = await server.ok("POST", "/api/jobs", job_body(url, 4, on_interrupt="rerun"))
        assert job["on_interrupt"] == "rerun"

        async def journaled() -> bool:
            return await asyncio.to_thread(journal_size, state) == 1

        await eventually(journaled, timeout=20)
        agent.kill()
        agent = AgentProcess(server.url, token, state, adb_server, virtual=1)

        async def completed() -> dict[str, Any] | None:
            current = await server.ok("GET", f"/api/jobs/{job['id']}")
            return current if current["status"] == "completed" else None

        done = await eventually(completed, timeout=45)
        assert done is not None
        assert (done["completed_count"], done["failed_count"]) == (1, 0)
        (row,) = await assignments(server, job["id"])
        assert (row["status"], row["attempt"], row["reruns"]) == ("completed", 1, 1)
        events = await server.services.pool.fetch(
            "SELECT data FROM job_events WHERE job_id = $1 AND kind = 'rerun'", job["id"])
        assert [(e["data"]["assignment_id"], e["data"]["interrupted_step"]) for e in events] == [(row["id"], 0)]
        assert await asyncio.to_thread(opened, state, url) == 1
        assert await asyncio.to_thread(journal_size, state) == 0
    finally:
        agent.kill()


async def test_a_rerun_the_server_no_longer_lists_is_reported_interrupted(
        server_factory: Factory, adb_server: int, tmp_path: Path) -> None:
    server = await server_factory(agent_grace_sec=1.0)
    token = await server.add_agent("pc")
    state = tmp_path / "agent"
    agent = AgentProcess(server.url, token, state, adb_server, virtual=1)
    try:
        await eventually(lambda: idle_phones(server, "pc", 1), timeout=45)
        job = await server.ok("POST", "/api/jobs", job_body("https://example.com/gone", 30, on_interrupt="rerun"))
        await eventually(lambda: asyncio.to_thread(journal_size, state), timeout=20)
        agent.kill()

        async def lost() -> bool:
            return bool((await assignments(server, job["id"]))[0]["error_code"] == "lost")

        await eventually(lost, timeout=20)  # the server gave up on it before the agent came back
        agent = AgentProcess(server.url, token, state, adb_server, virtual=1)

        async def told() -> dict[str, Any] | None:
            row = (await assignments(server, job["id"]))[0]
            return row if row["error_code"] == "interrupted" else None

        row = await eventually(told, timeout=45)
        assert row is not None
        assert (row["status"], row["reruns"]) == ("failed", 0)
        assert await asyncio.to_thread(opened, state, "https://example.com/gone") == 0
    finally:
        agent.kill()
