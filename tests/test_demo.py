"""``phonefleet-demo`` (``make run``) works the second time on the same data dir, and Ctrl-C stops
everything it started: server, agent, the private adb server and the embedded PostgreSQL."""

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import psutil

from tests.conftest import free_port
from tests.processes import pid_alive, postgres_processes, postmaster_pid

RUN_SEC = 240  # start, 3 phones, a job; generous for a loaded 2-core machine
STOP_SEC = 60


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _adb_servers(port: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if f"tcp:{port}" in " ".join(p.info["cmdline"] or []) and "fork-server" in (p.info["cmdline"] or [])]


class DemoRun:
    """One ``phonefleet-demo`` process and what it says."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def wait_for_line(self, start: str, timeout: float) -> str:
        async def read() -> str:
            assert self.proc.stdout is not None
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, "the demo ended early:\n" + "\n".join(self.lines)
                line = raw.decode().rstrip()
                self.lines.append(line)
                if line.strip().startswith(start):
                    return line

        try:
            return await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            raise AssertionError(f"no line starting {start!r} within {timeout}s:\n" + "\n".join(self.lines)) from None


async def _run_demo_once(data_dir: Path, port: int, adb_port: int, *, port_from_env: bool = False) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "PHONEFLEET_ADMIN_TOKEN", "PHONEFLEET_PORT")}
    where = {"PHONEFLEET_PORT": str(port)} if port_from_env else {}  # as the README's settings table says
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phonefleet.demo", "--data-dir", str(data_dir),
        *([] if port_from_env else ["--port", str(port)]),
        "--adb-port", str(adb_port), "--phones", "3", "--first-job-after", "1",
        env={**env, **where, "PYTHONUNBUFFERED": "1"}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    run = DemoRun(proc)
    try:
        # Where to look comes first, as soon as the server is up; the first job only after the phones.
        assert (await run.wait_for_line("dashboard:", RUN_SEC)).split()[-1] == f"http://127.0.0.1:{port}/"
        words = (await run.wait_for_line("sign in as:", 10)).split()
        name, password = words[3], words[5]
        assert f"{name} {password}" == (data_dir / "demo-person").read_text().strip()
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{port}/api/session", json={"name": name, "password": password}) as r:
            assert r.status == 201, await r.text()
        await run.wait_for_line("Ctrl-C stops everything", 10)
        await run.wait_for_line("sending a first job in 1 s", RUN_SEC)
        done = await run.wait_for_line("job ", RUN_SEC)
        while "completed" not in done:
            done = await run.wait_for_line("job ", RUN_SEC)
        assert "done · 0 failed · 0 running of" in done, done
        await run.wait_for_line("Ctrl-C stops everything", 30)
        started = psutil.Process(proc.pid).children(recursive=True)
        assert len(started) >= 2, "a server and an agent"
        secret = (data_dir / "demo-agent-token").read_text().strip()
        assert all(secret not in " ".join(p.cmdline()) for p in started), "the agent token is not on a command line"
        pg_pid = postmaster_pid(data_dir / "pg")
        assert pg_pid is not None and _adb_servers(adb_port), "an embedded PostgreSQL and a private adb server run"

        proc.send_signal(signal.SIGINT)
        assert proc.stdout is not None
        rest = await asyncio.wait_for(proc.stdout.read(), STOP_SEC)
        code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 0, run.lines + rest.decode().splitlines()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [], f"left behind: {alive}"
    assert not _accepts(port), "the server no longer listens"
    assert not _accepts(adb_port) and _adb_servers(adb_port) == [], "the private adb server is stopped"
    assert postgres_processes(data_dir / "pg") == [] and not pid_alive(pg_pid), "PostgreSQL is stopped"
    assert not (data_dir / "pg" / "postmaster.pid").exists()


async def test_demo_runs_twice_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    port, adb_port = free_port(), free_port()
    try:
        await _run_demo_once(data_dir, port, adb_port)
        await _run_demo_once(data_dir, port, adb_port, port_from_env=True)  # the same clone, the second time
    finally:
        for proc in postgres_processes(data_dir / "pg") + _adb_servers(adb_port):
            proc.kill()
    server_log = (data_dir / "logs" / "server.log").read_text()
    assert server_log.count("phonefleet server on") == 1, "each run's log starts fresh"
    assert (data_dir / "logs" / "server.previous.log").exists()
