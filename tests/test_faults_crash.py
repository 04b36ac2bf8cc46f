"""Crashes: an agent SIGKILLed with results in its outbox, or in the middle of a step. A finished run is
never recorded as lost, and a run cut short is never silently run again."""

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from phonefleet.sim.netfault import TcpFaultProxy
from tests.agent_processes import AgentProcess, agent_cli, finished_in_outbox, journal_size
from tests.conftest import RunningServer, eventually

Factory = Callable[..., Awaitable[RunningServer]]


class Rig:
    """A real server, optionally behind a TCP fault proxy, and one real agent process with virtual phones
    (killed at the end), whose state directory survives its restarts."""

    def __init__(self, server: RunningServer, proxy: TcpFaultProxy | None, token: str, state: Path, *,
                 adb_port: int, phones: int) -> None:
        self.server, self.proxy, self.token, self.state = server, proxy, token, state
        self.adb_port, self.phones = adb_port, phones
        self.agent = self._spawn()

    def _spawn(self) -> AgentProcess:
        url = self.proxy.url if self.proxy is not None else self.server.url
        return AgentProcess(url, self.token, self.state, self.adb_port, virtual=self.phones)

    def kill(self) -> None:
        self.agent.kill()

    def restart(self) -> None:
        """Start the agent again on the same state directory (its outbox, journal and phones' serials)."""
        self.agent = self._spawn()

    async def job(self, url: str, seconds: float, **extra: Any) -> dict[str, Any]:
        body = {"title": "crash", "plan": [{"type": "open_url", "url": url, "duration_sec": seconds}],
                "target_type": "device_count", "target_value": 1, **extra}
        created: dict[str, Any] = await self.server.ok("POST", "/api/jobs", body)
        return created

    async def assignments(self, job_id: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.server.ok("GET", f"/api/jobs/{job_id}/assignments"))["items"]
        return items

    async def until_job(self, job_id: int, done: Callable[[dict[str, Any]], bool], timeout: float = 45
                        ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            current: dict[str, Any] = await self.server.ok("GET", f"/api/jobs/{job_id}")
            return current if done(current) else None

        found = await eventually(check, timeout=timeout)
        assert found is not None
        return found

    async def journaled(self, runs: int) -> bool:
        return await asyncio.to_thread(journal_size, self.state) == runs

    def opened(self, url: str) -> int:
        """How often the agent's (new) virtual phones were sent this URL since the agent last started."""
        status = agent_cli(self.state, "status", "--json")
        return sum(url in command for phone in status["virtual"] for command in phone["recent"])


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def rig(server_factory: Factory, adb_server: int, tmp_path: Path) -> AsyncIterator[RigFactory]:
    made: list[Rig] = []
    proxies: list[TcpFaultProxy] = []

    async def make(*, phones: int, proxied: bool = False, **settings: Any) -> Rig:
        server = await server_factory(**settings)
        proxy = None
        if proxied:
            port = urlsplit(server.url).port
            assert port is not None
            proxy = TcpFaultProxy("127.0.0.1", port)
            await proxy.start()
            proxies.append(proxy)
        made.append(Rig(server, proxy, await server.add_agent("pc"), tmp_path / "agent", adb_port=adb_server,
                        phones=phones))
        await eventually(lambda: idle_phones(server, "pc", phones), timeout=45)
        return made[-1]

    yield make
    for r in made:
        r.kill()
    for proxy in proxies:
        await proxy.stop()


async def idle_phones(server: RunningServer, agent: str, count: int) -> bool:
    devices = await server.ok("GET", "/api/devices")
    return bool(sum(d["agent_name"] == agent and d["state"] == "idle" for d in devices) == count)


async def test_a_run_finished_while_its_agent_was_cut_off_is_completed_not_lost(rig: RigFactory) -> None:
    r = await rig(phones=2, proxied=True, agent_grace_sec=2.0)
    assert r.proxy is not None
    url = "https://example.com/cut-off"
    job = await r.job(url, 3, target_type="all_devices")
    assert job["target_count"] == 2

    async def both_running() -> bool:
        return [a["status"] for a in await r.assignments(job["id"])] == ["running", "running"]

    await eventually(both_running, timeout=20)
    r.proxy.refuse()  # the cable is pulled while both phones run
    await eventually(lambda: finished_in_outbox(r.state, 2), timeout=20)  # done on the phones, kept
    r.kill()
    lost = await r.until_job(job["id"], lambda j: j["failed_count"] == 2, timeout=20)  # the server's guess
    assert (lost["status"], lost["completed_count"]) == ("completed", 0)
    r.proxy.heal()
    r.restart()

    done = await r.until_job(job["id"], lambda j: j["completed_count"] == 2)
    assert (done["status"], done["failed_count"]) == ("completed", 0)
    rows = await r.assignments(job["id"])
    assert [(a["status"], a["attempt"], a["error_code"]) for a in rows] == [("completed", 1, None)] * 2
    await eventually(lambda: finished_in_outbox(r.state, 0, exact=True), timeout=20)
    assert await asyncio.to_thread(r.opened, url) == 0, "nothing was run again"


async def test_an_agent_killed_mid_step_reports_the_run_interrupted_and_it_is_retried(rig: RigFactory) -> None:
    r = await rig(phones=2, agent_grace_sec=60.0, lease_sec=60.0)  # back within grace and lease: no "lost"
    url = "https://example.com/interrupted"
    job = await r.job(url, 60, max_retries=1)

    async def journaled() -> bool:
        rows = await r.assignments(job["id"])
        return bool(rows) and rows[0]["status"] == "running" and await r.journaled(1)

    await eventually(journaled, timeout=20)
    r.kill()  # in the middle of its one minute on the page
    r.restart()

    async def retried() -> list[dict[str, Any]] | None:
        rows = await r.assignments(job["id"])
        return rows if len(rows) == 2 and rows[1]["status"] == "running" else None

    retries = await eventually(retried, timeout=45)
    assert retries is not None
    first, second = retries
    assert (first["status"], first["error_code"], first["retried"]) == ("failed", "interrupted", True)
    assert "step 1 (open_url)" in first["error"]
    assert (second["attempt"], second["slot_id"]) == (2, first["id"])
    assert await asyncio.to_thread(r.opened, url) == 1, "only the recorded retry ran after the crash"
    await r.server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "cancelled"})


async def test_a_run_cut_short_by_a_crash_still_uploads_the_screenshots_it_took(rig: RigFactory) -> None:
    r = await rig(phones=1, agent_grace_sec=60.0, lease_sec=60.0)  # a slow restart is no "lost" guess
    job = await r.server.ok("POST", "/api/jobs", {
        "title": "evidence", "target_type": "device_count", "target_value": 1, "max_retries": 0,
        "plan": [{"type": "screenshot"}, {"type": "open_url", "url": "https://example.com/long", "duration_sec": 60}]})

    async def shot_taken() -> tuple[int, bytes] | None:
        rows = await r.assignments(job["id"])
        if not rows or rows[0]["status"] != "running":
            return None
        files = list((r.state / "artifacts").glob(f"{rows[0]['id']}-*.png"))
        return (rows[0]["id"], files[0].read_bytes()) if files and await r.journaled(1) else None

    taken = await eventually(shot_taken, timeout=30)
    assert taken is not None
    aid, png = taken
    r.kill()  # on the page, after its screenshot
    r.restart()

    async def uploaded() -> list[dict[str, Any]] | None:
        rows = await r.assignments(job["id"])
        if rows[0]["error_code"] != "interrupted":
            return None
        listed: list[dict[str, Any]] = await r.server.ok("GET", f"/api/assignments/{aid}/artifacts")
        return listed if listed and all(a["status"] == "stored" for a in listed) else None

    listed = await eventually(uploaded, timeout=45)
    assert listed is not None
    (shot,) = listed
    assert (shot["kind"], shot["bytes"], shot["sha256"]) == ("screenshot", len(png), hashlib.sha256(png).hexdigest())

    async def let_go() -> bool:  # the agent deletes its copy once it has the server's answer, a moment later
        return not list((r.state / "artifacts").glob(f"{aid}-*"))

    assert await eventually(let_go, timeout=10), "sent, then let go of"


async def test_on_interrupt_rerun_runs_the_plan_again_and_records_the_rerun(rig: RigFactory) -> None:
    r = await rig(phones=1, agent_grace_sec=60.0, lease_sec=60.0)  # a slow restart is no "lost" guess
    url = "https://example.com/rerun"
    job = await r.job(url, 4, on_interrupt="rerun")
    assert job["on_interrupt"] == "rerun"
    await eventually(lambda: r.journaled(1), timeout=20)
    r.kill()
    r.restart()

    done = await r.until_job(job["id"], lambda j: j["status"] == "completed")
    assert (done["completed_count"], done["failed_count"]) == (1, 0)
    (row,) = await r.assignments(job["id"])
    assert (row["status"], row["attempt"], row["reruns"]) == ("completed", 1, 1)
    events = await r.server.services.pool.fetch(
        "SELECT data FROM job_events WHERE job_id = $1 AND kind = 'rerun'", job["id"])
    assert [(e["data"]["assignment_id"], e["data"]["interrupted_step"]) for e in events] == [(row["id"], 0)]
    assert await asyncio.to_thread(r.opened, url) == 1
    assert await r.journaled(0)


async def test_a_rerun_the_server_no_longer_lists_is_reported_interrupted(rig: RigFactory) -> None:
    r = await rig(phones=1, agent_grace_sec=1.0)
    url = "https://example.com/gone"
    job = await r.job(url, 30, on_interrupt="rerun")
    await eventually(lambda: r.journaled(1), timeout=20)
    r.kill()

    async def lost() -> bool:
        return bool((await r.assignments(job["id"]))[0]["error_code"] == "lost")

    await eventually(lost, timeout=20)  # the server gave up on it before the agent came back
    r.restart()

    async def told() -> dict[str, Any] | None:
        row = (await r.assignments(job["id"]))[0]
        return row if row["error_code"] == "interrupted" else None

    row = await eventually(told, timeout=45)
    assert row is not None
    assert (row["status"], row["reruns"]) == ("failed", 0)
    assert await asyncio.to_thread(r.opened, url) == 0
