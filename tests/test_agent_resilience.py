"""The agent when things break: unplugged phones, a killed server, a killed agent, pauses both ways."""

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from phonefleet.agent.agent import Agent
from phonefleet.agent.config import AgentSettings
from phonefleet.server import tokens
from phonefleet.sim.agent import SimDashboard
from tests.agent_fixtures import AgentFactory
from tests.agent_processes import AgentProcess, agent_cli, finished_in_outbox
from tests.conftest import ADMIN, RunningServer, eventually, free_port, open_url_job
from tests.server_processes import _spawn, healthy


async def device_states(server: RunningServer) -> dict[str, str]:
    return {d["serial"]: d["state"] for d in await server.ok("GET", "/api/devices")}


async def test_unplugged_phone_goes_offline_and_comes_back(server: RunningServer, agent_factory: AgentFactory) -> None:
    agent: Agent = await agent_factory("pc", virtual=2)
    assert agent.fleet is not None
    phone = agent.fleet.phones[0]
    await phone.go_offline()

    async def offline() -> bool:
        return (await device_states(server)).get(phone.adb_serial) == "offline"

    await eventually(offline, timeout=15)
    assert (await device_states(server))[agent.fleet.phones[1].adb_serial] == "idle"
    await phone.come_back()

    async def back() -> bool:
        return (await device_states(server)).get(phone.adb_serial) == "idle"

    await eventually(back, timeout=15)


async def test_phone_unplugged_mid_assignment_gives_its_slot_to_another(
    server: RunningServer, agent_factory: AgentFactory
) -> None:
    agent: Agent = await agent_factory("pc", virtual=2)
    assert agent.fleet is not None
    job = await server.ok("POST", "/api/jobs", open_url_job(
        target_type="device_count", target_value=1, max_retries=1,
        plan=[{"type": "open_url", "url": "https://example.com/long", "duration_sec": 30}]))

    async def running() -> dict[str, Any] | None:
        rows = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
        return next((r for r in rows if r["status"] == "running"), None)

    first = await eventually(running, timeout=15)
    assert first is not None
    await agent.fleet.phone(first["serial"]).go_offline()

    async def moved() -> dict[str, Any] | None:
        rows = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
        return next((r for r in rows if r["serial"] != first["serial"] and r["status"] == "running"), None)

    second = await eventually(moved, timeout=20)
    assert second is not None and second["attempt"] == 2
    rows = {r["serial"]: r for r in (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]}
    assert rows[first["serial"]]["status"] == "failed"
    assert rows[first["serial"]]["error_code"] == "device_lost"


async def test_pause_at_the_agent_cli_reaches_the_dashboard(server: RunningServer,
                                                          agent_factory: AgentFactory) -> None:
    dash = SimDashboard(server.url, ADMIN)
    await dash.connect()
    agent: Agent = await agent_factory("rack-1", virtual=2)
    assert agent.fleet is not None
    serial = agent.fleet.phones[0].adb_serial
    status = await asyncio.to_thread(agent_cli, agent.state_dir, "pause", "--device", serial)
    assert status["paused_serials"] == [serial]
    await dash.wait_for(lambda: any(p["source"] == "agent" and p["paused"] and p["serial"] == serial
                                    and p["agent_name"] == "rack-1" for p in dash.events("pause:changed")),
                        timeout=10)
    assert (await device_states(server))[serial] == "paused"
    job = await server.ok("POST", "/api/jobs", open_url_job())
    assert job["target_count"] == 1, "the paused phone takes no work"

    await asyncio.to_thread(agent_cli, agent.state_dir, "resume", "--device", serial)
    await dash.wait_for(lambda: any(p["source"] == "agent" and not p["paused"]
                                    for p in dash.events("pause:changed")), timeout=10)
    whole = await asyncio.to_thread(agent_cli, agent.state_dir, "pause")
    assert whole["paused"] is True
    await dash.wait_for(lambda: any(p["scope"] == "agent" and p["paused"] for p in dash.events("pause:changed")),
                        timeout=10)
    await dash.disconnect()


async def test_pause_from_rest_stops_queued_work_on_the_agent(server: RunningServer,
                                                              agent_factory: AgentFactory) -> None:
    agent: Agent = await agent_factory("pc", virtual=1)
    assert agent.fleet is not None
    phone = agent.fleet.phones[0]
    agent.pause("device", phone.adb_serial)  # the operator holds the phone at the PC ...

    async def paused_on_server() -> bool:
        return (await device_states(server))[phone.adb_serial] == "paused"

    await eventually(paused_on_server)
    # its own phone (the shared adb server may list other tests' phones too, offline)
    device_id = next(d["id"] for d in await server.ok("GET", "/api/devices") if d["serial"] == phone.adb_serial)
    await server.ok("PATCH", f"/api/devices/{device_id}", {"paused": False})  # ... the server overrides it
    job = await server.ok("POST", "/api/jobs", open_url_job(
        plan=[{"type": "open_url", "url": "https://example.com/queued", "duration_sec": 0}]))
    assert job["assigned_count"] == 1

    async def queued() -> bool:
        return bool(agent.workers[phone.adb_serial].queued_ids())

    await eventually(queued)  # delivered, but the phone is still held at the PC
    await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "paused"})

    async def dropped() -> bool:
        return not agent.workers[phone.adb_serial].queued_ids()

    await eventually(dropped)
    agent.pause("device", phone.adb_serial, resume=True)
    await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "active"})

    async def completed() -> bool:
        return bool((await server.ok("GET", f"/api/jobs/{job['id']}"))["status"] == "completed")

    await eventually(completed, timeout=20)
    opened = [c for c in phone.actions.commands() if "example.com/queued" in c]
    assert len(opened) == 1, "ran once, after the resume"


async def test_server_killed_mid_job_records_every_result_once(dsn: str, tmp_path: Path, adb_server: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _spawn(dsn, tmp_path, 0, port)
    conn = await asyncpg.connect(dsn)
    agent: Agent | None = None
    try:
        await eventually(lambda: healthy(url), timeout=30)
        _, token = await tokens.add_agent(conn, "pc")
        agent = Agent(AgentSettings(server=url, token=token, state_dir=tmp_path / "agent", virtual=3,
                                    adb_port=adb_server))
        await agent.start()

        async def idle() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM devices WHERE state = 'idle'") == 3)

        await eventually(idle, timeout=30)
        body = open_url_job(plan=[{"type": "open_url", "url": "https://example.com/k", "duration_sec": 1.5}])
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http, \
                http.post(url + "/api/jobs", json=body) as r:
            assert r.status == 201
            job = await r.json()

        async def all_running() -> bool:
            return bool(await conn.fetchval(
                "SELECT count(*) FROM assignments WHERE job_id = $1 AND status = 'running'", job["id"]) == 3)

        await eventually(all_running, timeout=15)
        os.kill(proc.pid, signal.SIGKILL)  # the server dies while every phone is mid-plan
        proc.wait(timeout=10)

        async def results_waiting() -> bool:
            assert agent is not None
            return len(agent.outbox) >= 3

        await eventually(results_waiting, timeout=15)  # finished on the phones, kept in the outbox
        proc = _spawn(dsn, tmp_path, 1, port)

        async def completed() -> bool:
            return bool(await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job["id"]) == "completed")

        await eventually(completed, timeout=30)
        rows = await conn.fetch("SELECT status, attempt FROM assignments WHERE job_id = $1", job["id"])
        assert [(r["status"], r["attempt"]) for r in rows] == [("completed", 1)] * 3
        assert await conn.fetchval("SELECT completed_count FROM jobs WHERE id = $1", job["id"]) == 3
        await eventually(lambda: _drained(agent), timeout=10)
    finally:
        if agent is not None:
            await agent.stop()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        await conn.close()


async def _drained(agent: Agent | None) -> bool:
    return agent is not None and len(agent.outbox) == 0


async def test_agent_killed_and_restarted_loses_no_result(server_factory: Any, adb_server: int,
                                                          tmp_path: Path) -> None:
    from tests.proxy import FlakyProxy

    server: RunningServer = await server_factory(agent_grace_sec=30)  # back well within its grace

    proxy = FlakyProxy(server.url)
    await proxy.start()
    token = await server.add_agent("pc")
    state = tmp_path / "agent"
    agent = AgentProcess(proxy.url, token, state, adb_server, virtual=2)
    try:
        async def idle() -> bool:  # (the shared adb server may list other tests' phones as offline)
            return sum(v == "idle" for v in (await device_states(server)).values()) == 2

        await eventually(idle, timeout=30)
        job = await server.ok("POST", "/api/jobs", open_url_job(
            plan=[{"type": "open_url", "url": "https://example.com/once", "duration_sec": 1}]))

        async def running() -> bool:
            rows = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
            return [r["status"] for r in rows] == ["running", "running"]

        await eventually(running, timeout=15)
        proxy.block_all = True  # the server becomes unreachable while the phones finish ...
        await proxy.kill_websockets()
        await eventually(lambda: finished_in_outbox(state, 2), timeout=15)
        agent.kill()  # ... and the agent dies with both results only in its outbox
        proxy.block_all = False
        agent = AgentProcess(proxy.url, token, state, adb_server, virtual=2)

        async def completed() -> bool:
            return bool((await server.ok("GET", f"/api/jobs/{job['id']}"))["status"] == "completed")

        await eventually(completed, timeout=30)
        rows = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
        assert [(r["status"], r["attempt"]) for r in rows] == [("completed", 1)] * 2, [r["error"] for r in rows]
        await eventually(lambda: finished_in_outbox(state, 0, exact=True), timeout=10)
        status = await asyncio.to_thread(agent_cli, state, "status", "--json")
        assert len(status["virtual"]) == 2
        assert not any("example.com/once" in c for p in status["virtual"] for c in p["recent"]), \
            "a result kept in the outbox is not run again"
    finally:
        agent.kill()
        await proxy.stop()


async def test_adb_server_killed_is_restarted_and_phones_come_back(
    server: RunningServer, agent_factory: AgentFactory, adb_server: int
) -> None:
    import adbutils

    agent: Agent = await agent_factory("pc", virtual=2)
    assert agent.tracker is not None
    restarts = agent.tracker.restarts
    await asyncio.to_thread(subprocess.run, [str(adbutils.adb_path()), "-P", str(adb_server), "kill-server"],
                            capture_output=True, timeout=30, check=False)

    async def restarted_and_idle() -> bool:
        assert agent.tracker is not None
        assert agent.fleet is not None
        states = await device_states(server)  # (other tests' phones may linger on the shared adb server)
        return agent.tracker.restarts > restarts and all(states.get(p.adb_serial) == "idle"
                                                         for p in agent.fleet.phones)

    await eventually(restarted_and_idle, timeout=30)
    job = await server.ok("POST", "/api/jobs", open_url_job())

    async def completed() -> bool:
        return bool((await server.ok("GET", f"/api/jobs/{job['id']}"))["status"] == "completed")

    await eventually(completed, timeout=20)
