"""The soak's moving parts, each one a real process or server that a fault can hit.

- ``SoakPostgres``: its own embedded PostgreSQL listening on a loopback TCP port (or the external one
  of ``DATABASE_URL``, in a scratch database), behind a ``TcpFaultProxy`` the server connects through.
- ``ServerProcess``: ``phonefleet-server`` as a child process, SIGKILLed and restarted on the same port.
- ``Rack``: one PC: a private adb server, the virtual phones adb-connected to it (they live in the soak's
  process, so what they ran survives the agent), a ``TcpFaultProxy`` between its agent and the server,
  and the agent itself as a child process (``phonefleet-agent run``, without ``--virtual``).
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from phonefleet.server.embedded_postgres import EmbeddedPostgres, pg_ctl, running_postmaster
from phonefleet.sim.netfault import TcpFaultProxy
from phonefleet.virtual import LocalAdbServer, VirtualFleet, VirtualPhone

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def _dsn(base: str, *, database: str, port: int | None = None) -> str:
    """``base`` with another database, and (through a proxy) another loopback port; the user is kept."""
    parts = urlsplit(base)
    netloc = parts.netloc
    if port is not None:
        user = netloc.rsplit("@", 1)[0] + "@" if "@" in netloc else ""
        netloc = f"{user}{LOOPBACK}:{port}"
    return urlunsplit(parts._replace(netloc=netloc, path="/" + database))


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> "subprocess.Popen[bytes]":
    """A child in its own session (a Ctrl-C on the soak reaches only the soak, which stops it in order)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


def _stop(proc: "subprocess.Popen[bytes] | None", timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SoakPostgres:
    """The database, behind a fault proxy; ``restart`` is a real ``pg_ctl restart`` when the soak owns it."""

    def __init__(self, work_dir: Path, external_url: str | None) -> None:
        self.work_dir = work_dir
        self.external_url = external_url
        self.embedded: EmbeddedPostgres | None = None
        self.proxy: TcpFaultProxy | None = None
        self.direct_dsn = ""
        """Straight to PostgreSQL (the soak's own queries and the audit)."""
        self.server_dsn = ""
        """Through the proxy (the server's)."""
        self._root_dsn = ""
        self.database = f"soak_{uuid.uuid4().hex[:8]}"

    @property
    def kind(self) -> str:
        return "external (DATABASE_URL)" if self.external_url else "embedded (pgserver), own TCP port"

    async def start(self) -> None:
        if self.external_url:
            self._root_dsn = self.external_url
        else:
            port = free_port()
            self.embedded = EmbeddedPostgres(self.work_dir)
            await asyncio.to_thread(self.embedded.start)
            await asyncio.to_thread(self._pg_ctl, "-w", "-m", "fast", "restart",
                                    "-o", f"-h {LOOPBACK} -p {port} -k {self.embedded.data_dir}")
            self._root_dsn = f"postgresql://postgres@{LOOPBACK}:{port}/postgres"
        conn = await asyncpg.connect(self._root_dsn)
        try:
            await conn.execute(f"CREATE DATABASE {self.database}")
        finally:
            await conn.close()
        self.direct_dsn = _dsn(self._root_dsn, database=self.database)
        upstream = urlsplit(self._root_dsn)
        if not upstream.hostname:
            raise SystemExit("the soak reaches PostgreSQL through a TCP proxy: DATABASE_URL needs a TCP host")
        self.proxy = TcpFaultProxy(upstream.hostname, upstream.port or 5432)
        await self.proxy.start()
        self.server_dsn = _dsn(self._root_dsn, database=self.database, port=self.proxy.port)

    def _pg_ctl(self, *args: str) -> None:
        assert self.embedded is not None
        pg_ctl(self.embedded.data_dir, *args, timeout=120)

    async def restart(self, outage_sec: float) -> str:
        """Restart PostgreSQL for real (``pg_ctl restart -m fast``: every connection drops); an external one
        is only made unreachable for ``outage_sec`` (its connections reset, new ones refused)."""
        assert self.proxy is not None
        if self.embedded is None:
            self.proxy.refuse()
            await asyncio.sleep(outage_sec)
            self.proxy.heal()
            return f"external: refused for {outage_sec:.1f} s"
        await asyncio.to_thread(self._pg_ctl, "-w", "-m", "fast", "restart")
        return "pg_ctl restart -m fast"

    def postmaster_pid(self) -> int | None:
        if self.embedded is None:
            return None
        postmaster = running_postmaster(self.embedded.data_dir)
        return postmaster.pid if postmaster else None

    async def stop(self, *, keep_data: bool = False) -> None:
        """Stop; ``keep_data`` keeps the soak's database (the embedded one's files stay in the work dir)."""
        if self.proxy is not None:
            await self.proxy.stop()
        if keep_data:
            if self.embedded is not None:
                await asyncio.to_thread(self.embedded.stop)
            return
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(self._root_dsn)
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
            finally:
                await conn.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


class ServerProcess:
    """``phonefleet-server`` on a fixed port, against the database through its proxy."""

    def __init__(self, work_dir: Path, dsn: str, admin_token: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log = work_dir / "logs" / "server.log"
        self.env = {"DATABASE_URL": dsn, "PHONEFLEET_ADMIN_TOKEN": admin_token, "PHONEFLEET_PORT": str(self.port),
                    "PHONEFLEET_DATA_DIR": str(work_dir / "server"), **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _spawn([sys.executable, "-m", "phonefleet.server.cli"], self.log, self.env)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_healthy(self, timeout: float = 120) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                if not self.running:
                    raise RuntimeError(f"the server exited; see {self.log}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self.url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"the server did not answer /healthz within {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        _stop(self.proc)


class Rack:
    """One PC: its adb server, its phones, its link to the server (through a proxy), its agent process."""

    def __init__(self, index: int, phones: int, work_dir: Path, server_port: int, env: dict[str, str]) -> None:
        """Make racks one after another, each started before the next is made: its adb port is picked here,
        and must not be taken meanwhile by another rack's phones (an adb client would talk to a phone)."""
        self.index = index
        self.name = f"soak-pc{index}"
        self.adb = LocalAdbServer(free_port())
        self.fleet = VirtualFleet(phones, adb_port=self.adb.port, serial_prefix=f"SOAK{index}-", timeout=60)
        self.proxy = TcpFaultProxy(LOOPBACK, server_port)
        self.state_dir = work_dir / "agents" / self.name
        self.log = work_dir / "logs" / f"{self.name}.log"
        self.env = env
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None

    async def start_phones(self) -> None:
        """The adb server and the phones first: they outlive every agent that drives them."""
        await self.adb.start()
        await self.proxy.start()
        await self.fleet.start()

    def start_agent(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proc = _spawn([sys.executable, "-m", "phonefleet.agent.cli", "run", "--server", self.proxy.url,
                            "--adb-port", str(self.adb.port), "--state-dir", str(self.state_dir)],
                           self.log, {"PHONEFLEET_AGENT_TOKEN": self.token, **self.env})

    @property
    def agent_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_agent(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def phone(self, serial: str) -> VirtualPhone:
        return self.fleet.phone(serial)

    async def agent_status(self) -> dict[str, Any] | None:
        """The running agent's own account (link, outbox, what each phone runs), or None if unreachable."""
        try:
            control = json.loads((self.state_dir / "control.json").read_text())
        except (OSError, ValueError):
            return None
        try:
            async with aiohttp.ClientSession() as http, http.get(
                    f"http://{LOOPBACK}:{control['port']}/status", timeout=aiohttp.ClientTimeout(total=5),
                    headers={"Authorization": f"Bearer {control['token']}"}) as r:
                status: dict[str, Any] = await r.json()
                return status if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def stop(self) -> None:
        await asyncio.to_thread(_stop, self.proc)
        await self.proxy.stop()
        await self.fleet.stop()
        await self.adb.stop()
