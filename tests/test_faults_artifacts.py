"""Artifacts never go missing: a real agent process with virtual phones takes screenshots while its link is
cut, while it is SIGKILLed with the files queued, and while the server process is killed mid-upload. Every
artifact arrives exactly once, intact (the stored bytes hash to what the run's result said), and the agent
deletes its copy only once the server stored it."""

import asyncio
import hashlib
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from phonefleet.sim.netfault import TcpFaultProxy
from tests.agent_processes import AgentProcess
from tests.conftest import ADMIN, RunningServer, eventually, free_port
from tests.server_processes import _spawn, healthy

SHOTS = 5
FILES = SHOTS + 1
"""Each run's files: its screenshots and its logcat."""
PHONES = 2


def uploads_queued(state: Path) -> int:
    with sqlite3.connect(state / "outbox.sqlite3") as db:
        try:
            return int(db.execute("SELECT count(*) FROM outbox WHERE event = 'artifact:upload'").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def local_files(state: Path) -> list[str]:
    folder = state / "artifacts"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


class Admin:
    """The admin's REST calls to a server by URL (in-process or a real process)."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url, self.session = url, session

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.url + path, json=body,
                                        headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status < 300, (r.status, await r.text())
            return await r.json() if r.status != 204 else None

    async def job(self) -> dict[str, Any]:
        plan = [{"type": "wait", "duration_sec": 1.5}, *[{"type": "screenshot"}] * SHOTS]
        job: dict[str, Any] = await self.call("POST", "/api/jobs", {
            "title": "evidence", "plan": plan, "target_type": "device_count", "target_value": PHONES})
        return job

    async def runs(self, job_id: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.call("GET", f"/api/jobs/{job_id}/assignments"))["items"]
        return items

    async def all_running(self, job_id: int) -> bool:
        runs = await self.runs(job_id)
        return len(runs) == PHONES and all(r["status"] == "running" for r in runs)

    async def idle_phones(self) -> bool:
        devices = await self.call("GET", "/api/devices")
        return bool(sum(d["state"] == "idle" for d in devices) == PHONES)


async def every_artifact_once_and_intact(admin: Admin, job_id: int, data_dir: Path, state: Path) -> None:
    """All of the job's screenshots stored, each once, with the bytes its run's result described; the agent
    kept nothing it was told is stored, and no upload is left in its outbox."""
    async def stored() -> list[dict[str, Any]] | None:
        runs = await admin.runs(job_id)
        if len(runs) != PHONES or any(r["status"] != "completed" for r in runs):
            return None
        rows = [a for r in runs for a in await admin.call("GET", f"/api/assignments/{r['id']}/artifacts")]
        if len(rows) == PHONES * FILES and all(a["status"] == "stored" for a in rows):
            return rows
        return None

    rows = await eventually(stored, timeout=60)
    assert rows is not None
    assert len({(a["assignment_id"], a["name"]) for a in rows}) == PHONES * FILES
    for run in await admin.runs(job_id):
        assert run["artifacts_pending"] == 0
        folder = data_dir / "artifacts" / str(run["id"])
        kept = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".part"))
        assert kept == sorted(a["name"] for a in rows if a["assignment_id"] == run["id"]), "exactly once"
    for artifact in rows:
        on_disk = (data_dir / "artifacts" / str(artifact["assignment_id"]) / artifact["name"]).read_bytes()
        assert hashlib.sha256(on_disk).hexdigest() == artifact["sha256"] and len(on_disk) == artifact["bytes"]
        assert on_disk.startswith(b"\x89PNG" if artifact["kind"] == "screenshot" else b"\x1f\x8b")  # PNG or gzip
    await eventually(lambda: asyncio.to_thread(lambda: uploads_queued(state) == 0 and not local_files(state)),
                     timeout=30)


async def stored(server: RunningServer, at_least: int) -> int:
    """Artifacts the server stored, when at least this many (else 0)."""
    async with server.services.pool.acquire() as conn:
        n = int(await conn.fetchval("SELECT count(*) FROM artifacts WHERE status = 'stored'"))
    return n if n >= at_least else 0


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def proxied(server: RunningServer) -> AsyncIterator[TcpFaultProxy]:
    port = urlsplit(server.url).port
    assert port is not None
    proxy = TcpFaultProxy("127.0.0.1", port)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_link_cut_mid_upload_every_artifact_arrives_once(
        server: RunningServer, proxied: TcpFaultProxy, adb_server: int, tmp_path: Path,
        session: aiohttp.ClientSession) -> None:
    admin = Admin(server.url, session)
    state = tmp_path / "agent"
    agent = AgentProcess(proxied.url, await server.add_agent("pc"), state, adb_server, virtual=PHONES)
    try:
        await eventually(admin.idle_phones, timeout=45)
        job = await admin.job()
        await eventually(lambda: admin.all_running(job["id"]), timeout=30)
        proxied.refuse()  # the runs end and their files queue up while the server is out of reach
        await eventually(lambda: asyncio.to_thread(lambda: uploads_queued(state) == PHONES * FILES), timeout=30)
        proxied.heal()
        await eventually(lambda: stored(server, 1), timeout=30, interval=0.01)
        # The link goes silent under the agent: its next upload is caught in it, part of it (or all of it, its
        # answer lost) sent; then the connection is reset under it.
        proxied.stall()
        assert await asyncio.to_thread(uploads_queued, state), "the link failed while files were still to go"
        await eventually(lambda: asyncio.to_thread(lambda: proxied.stalled_bytes > 0), timeout=30, interval=0.01)
        proxied.heal()
        await every_artifact_once_and_intact(admin, job["id"], server.services.settings.data_dir, state)
    finally:
        agent.kill()


async def test_agent_sigkilled_with_artifacts_queued_sends_them_after_restart(
        server: RunningServer, proxied: TcpFaultProxy, adb_server: int, tmp_path: Path,
        session: aiohttp.ClientSession) -> None:
    admin = Admin(server.url, session)
    state = tmp_path / "agent"
    token = await server.add_agent("pc")
    agent = AgentProcess(proxied.url, token, state, adb_server, virtual=PHONES)
    try:
        await eventually(admin.idle_phones, timeout=45)
        job = await admin.job()
        await eventually(lambda: admin.all_running(job["id"]), timeout=30)
        proxied.refuse()
        await eventually(lambda: asyncio.to_thread(lambda: uploads_queued(state) == PHONES * FILES), timeout=30)
        assert len(local_files(state)) == PHONES * FILES
        agent.kill()
        proxied.heal()
        agent = AgentProcess(proxied.url, token, state, adb_server, virtual=PHONES)
        await every_artifact_once_and_intact(admin, job["id"], server.services.settings.data_dir, state)
    finally:
        agent.kill()


async def test_server_killed_mid_upload_every_artifact_arrives_once(
        dsn: str, adb_server: int, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    servers: list[subprocess.Popen[bytes]] = []

    async def start_server() -> None:
        servers.append(_spawn(dsn, tmp_path, 0, port))  # node 0 each time: the same data directory
        await eventually(lambda: healthy(url), timeout=30, interval=0.1)

    proxy = TcpFaultProxy("127.0.0.1", port)
    await proxy.start()
    admin = Admin(url, session)
    state = tmp_path / "agent"
    agent: AgentProcess | None = None
    try:
        await start_server()
        token = (await admin.call("POST", "/api/agents", {"name": "pc"}))["token"]
        agent = AgentProcess(proxy.url, token, state, adb_server, virtual=PHONES)
        await eventually(admin.idle_phones, timeout=45)
        job = await admin.job()
        await eventually(lambda: admin.all_running(job["id"]), timeout=30)
        proxy.refuse()
        await eventually(lambda: asyncio.to_thread(lambda: uploads_queued(state) == PHONES * FILES), timeout=30)
        conn = await asyncpg.connect(dsn)
        try:
            proxy.heal()  # the queued files flow

            async def first_stored() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM artifacts WHERE status = 'stored'"))

            await eventually(first_stored, timeout=30, interval=0.01)
            proxy.stall()  # the next upload is caught in the link, part of it (or all) sent; the server dies
            servers[-1].send_signal(signal.SIGKILL)
            servers[-1].wait(timeout=10)
            stored_before = await conn.fetchval("SELECT count(*) FROM artifacts WHERE status = 'stored'")
        finally:
            await conn.close()
        assert stored_before < PHONES * FILES, "the kill came while uploads were still to come"
        await start_server()
        proxy.heal()
        await every_artifact_once_and_intact(admin, job["id"], tmp_path / "node0", state)
    finally:
        if agent is not None:
            agent.kill()
        await proxy.stop()
        for proc in servers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
