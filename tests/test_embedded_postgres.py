"""The embedded PostgreSQL is never orphaned: a server SIGKILLed leaves it running, the next server on
the same data dir adopts it and stops it on exit; a CLI command sharing a live server's database never
stops it."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from phonefleet.server.database import EmbeddedPostgres
from phonefleet.server.embedded_postgres import running_postmaster
from tests.conftest import ADMIN, eventually, free_port
from tests.processes import healthy, pid_alive, postgres_processes, postmaster_pid, spawn_server, stop_process

START_SEC = 90  # a first start runs initdb; the machine may be loaded


class ServerOnDataDir:
    """Real ``phonefleet-server`` processes, one after another, on one embedded data dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "data"
        self.pgdata = self.data_dir / "pg"
        self.log = tmp_path / "server.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.url = ""

    async def start(self) -> "subprocess.Popen[bytes]":
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        proc = spawn_server(self.data_dir, port, self.log, PHONEFLEET_ADMIN_TOKEN=ADMIN)
        self.procs.append(proc)

        async def up() -> bool:
            assert proc.poll() is None, f"server exited:\n{self.log.read_text()[-3000:]}"
            return await healthy(self.url)

        await eventually(up, timeout=START_SEC, interval=0.2)
        return proc

    def agents_add(self, name: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        done = subprocess.run([sys.executable, "-m", "phonefleet.server.cli", "--data-dir", str(self.data_dir),
                               "agents", "add", name], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerOnDataDir]:
    servers = ServerOnDataDir(tmp_path)
    try:
        yield servers
    finally:
        servers.close()
        for proc in postgres_processes(servers.pgdata):  # never leave one behind, even on failure
            proc.kill()


async def _accepts(pgdata: Path, dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _assert_no_postgres_left(pgdata: Path, dsn: str, pid: int) -> None:
    async def gone() -> bool:
        return not pid_alive(pid)

    await eventually(gone, timeout=30, interval=0.2)
    assert postgres_processes(pgdata) == []
    assert not (pgdata / "postmaster.pid").exists()
    assert not await _accepts(pgdata, dsn)


async def test_server_restarted_after_sigkill_stops_the_orphaned_postgres(servers: ServerOnDataDir) -> None:
    first = await servers.start()
    pid = postmaster_pid(servers.pgdata)
    assert pid is not None and pid_alive(pid)
    postmaster = running_postmaster(servers.pgdata)
    assert postmaster is not None
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert pid_alive(pid), "a SIGKILLed server cannot stop its PostgreSQL: it is left running"

    second = await servers.start()
    assert postmaster_pid(servers.pgdata) == pid, "the new server adopts the PostgreSQL it found"
    second.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(second.wait, 60) == 0
    await _assert_no_postgres_left(servers.pgdata, postmaster.uri, pid)


async def test_agents_add_beside_a_running_server_leaves_its_database_running(servers: ServerOnDataDir) -> None:
    server = await servers.start()
    pid = postmaster_pid(servers.pgdata)
    assert pid is not None
    token = await asyncio.to_thread(servers.agents_add, "rack-1")
    assert pid_alive(pid) and postmaster_pid(servers.pgdata) == pid
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http, \
            http.get(servers.url + "/api/agent/assignments") as r:
        assert r.status == 200, "the server still reaches its database, and the new agent's token works"
    holders = json.loads((servers.data_dir / "pg.holders.json").read_text())
    assert [h["pid"] for h in holders] == [server.pid]

    server.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait, 60) == 0
    postmaster_uri = f"postgresql://postgres:@/postgres?host={servers.pgdata}"
    await _assert_no_postgres_left(servers.pgdata, postmaster_uri, pid)


async def test_agents_add_after_a_killed_server_stops_the_orphan(servers: ServerOnDataDir) -> None:
    server = await servers.start()
    pid = postmaster_pid(servers.pgdata)
    assert pid is not None
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=10)
    await asyncio.to_thread(servers.agents_add, "rack-2")
    postmaster_uri = f"postgresql://postgres:@/postgres?host={servers.pgdata}"
    await _assert_no_postgres_left(servers.pgdata, postmaster_uri, pid)


async def test_a_recycled_pid_does_not_hold_the_database(tmp_path: Path) -> None:
    """A holder whose pid now belongs to another process (its start time differs) is pruned."""
    embedded = EmbeddedPostgres(tmp_path)
    await asyncio.to_thread(embedded.start)
    pid = postmaster_pid(embedded.data_dir)
    assert pid is not None
    holders_path = tmp_path / "pg.holders.json"
    holders = json.loads(holders_path.read_text())
    impostor = {"id": "killed-long-ago", "pid": os.getppid(), "started": 1.0}  # a live pid, another start
    holders_path.write_text(json.dumps([*holders, impostor]))
    try:
        await asyncio.to_thread(embedded.stop)
        assert not pid_alive(pid)
        assert json.loads(holders_path.read_text()) == []
    finally:
        for proc in postgres_processes(embedded.data_dir):
            proc.kill()
