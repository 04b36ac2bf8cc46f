"""Shared fixtures: a real PostgreSQL (embedded unless DATABASE_URL is set), a database per test
cloned from a migrated template, and real servers on loopback ports."""

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from phonefleet.server import tokens
from phonefleet.server.app import SERVICES, Services, create_app
from phonefleet.server.config import Settings
from phonefleet.server.database import EmbeddedPostgres, migrate
from phonefleet.sim.agent import SimAgent

pytest_plugins = ["tests.agent_fixtures", "tests.browser_fixtures", "tests.db_fault_fixtures",
                  "tests.health_fixtures", "tests.live_server_fixtures", "tests.server_processes",
                  "tests.supabase_fixtures"]

ADMIN = "pfadm_test-admin-token"
TEMPLATE = "phonefleet_template"

T = TypeVar("T")


def _with_db(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def pg_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server-level DSN: DATABASE_URL if given, else a private embedded PostgreSQL."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    embedded = EmbeddedPostgres(Path(tmp_path_factory.mktemp("pg")))
    yield embedded.start()
    embedded.stop()


@pytest.fixture(scope="session")
async def template_db(pg_root: str) -> str:
    conn = await asyncpg.connect(pg_root)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(_with_db(pg_root, TEMPLATE))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return TEMPLATE


async def create_database(pg_root: str, template: str) -> str:
    """A new database cloned from ``template``; returns its name."""
    name = f"pf_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_root)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await conn.close()
    return name


async def drop_database(pg_root: str, name: str) -> None:
    conn = await asyncpg.connect(pg_root)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def dsn(pg_root: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = await create_database(pg_root, template_db)
    yield _with_db(pg_root, name)
    await drop_database(pg_root, name)


def test_settings(dsn: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn, "admin_token": ADMIN, "data_dir": tmp_path, "port": 0,
        "lease_sec": 5.0, "agent_grace_sec": 2.0, "heartbeat_sec": 0.5, "maintenance_sec": 0.2,
        "retry_base_sec": 0.05, "retry_max_sec": 0.2, "progress_hz": 20.0, "db_pool_max": 10,
        # A loaded 2-core CI machine can take seconds to answer a virtual phone's probe: a test about anything
        # else must not see its phones turn unhealthy for that. The probe's own tests set the threshold.
        "health_max_probe_sec": 60.0,
    }
    values.update(overrides)
    return Settings(**values)


class RunningServer:
    """A real server on a loopback port, with an admin HTTP client."""

    def __init__(self, app: web.Application, runner: web.AppRunner, url: str, session: aiohttp.ClientSession):
        self.app = app
        self.runner = runner
        self.url = url
        self.session = session
        self.clients: list[SimAgent] = []

    async def close(self) -> None:
        for client in self.clients:
            if client.sio.connected:
                await client.disconnect()
        await self.session.close()
        await self.runner.cleanup()

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    async def request(self, method: str, path: str, *, token: str | None = ADMIN, json: Any = None,
                      data: bytes | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.url + path, json=json, data=data, headers=headers) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def ok(self, method: str, path: str, json: Any = None, expect: int | None = None) -> Any:
        status, body = await self.request(method, path, json=json)
        wanted = expect or {"POST": 201}.get(method, 200)
        assert status == wanted, (status, body)
        return body

    async def add_agent(self, name: str) -> str:
        async with self.services.pool.acquire() as conn:
            _, token = await tokens.add_agent(conn, name)
        return token

    async def sim_agent(self, name: str, phones: int, **kwargs: Any) -> SimAgent:
        token = await self.add_agent(name)
        agent = SimAgent(self.url, token, [f"{name}-{i:03d}" for i in range(phones)], **kwargs)
        self.clients.append(agent)
        await agent.connect()
        return agent


async def start_server(settings: Settings) -> RunningServer:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return RunningServer(app, runner, f"http://127.0.0.1:{port}", aiohttp.ClientSession())


@pytest.fixture
async def server_factory(dsn: str, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    started: list[RunningServer] = []

    async def factory(**overrides: Any) -> RunningServer:
        srv = await start_server(test_settings(dsn, tmp_path, **overrides))
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        await srv.close()


@pytest.fixture
async def server(server_factory: Callable[..., Awaitable[RunningServer]]) -> RunningServer:
    return await server_factory()


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05) -> T:
    """Wait until ``check`` returns a truthy value (re-checked on a short interval), or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


Agents = Callable[[str, int], Awaitable[SimAgent]]


@pytest.fixture
def agents(server: RunningServer) -> Agents:
    """Start simulated agents; the server fixture disconnects them at the end, passed or failed."""
    return server.sim_agent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def open_url_job(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "open example",
        "plan": [{"type": "open_url", "url": "https://example.com", "duration_sec": 1}],
        "target_type": "all_devices",
    }
    body.update(overrides)
    return body
