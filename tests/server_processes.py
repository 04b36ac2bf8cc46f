"""Fixtures: real server processes (``python -m phonefleet.server.cli``) on one test database."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ADMIN, eventually, free_port


async def healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def _spawn(dsn: str, tmp_path: Path, i: int, port: int, **env: str) -> "subprocess.Popen[bytes]":
    """Server process ``i`` on ``port``, logging to ``tmp_path/node{i}.log``; ``env`` adds PHONEFLEET_* settings."""
    values = {**os.environ, "DATABASE_URL": dsn, "PHONEFLEET_ADMIN_TOKEN": ADMIN, "PHONEFLEET_PORT": str(port),
              "PHONEFLEET_DATA_DIR": str(tmp_path / f"node{i}"), "PHONEFLEET_MAINTENANCE_SEC": "0.2",
              "PHONEFLEET_AGENT_GRACE_SEC": "10", **env}
    with (tmp_path / f"node{i}.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "phonefleet.server.cli"], env=values,
                                stdout=log, stderr=subprocess.STDOUT)


NodeFactory = Callable[..., Awaitable[list[str]]]


@pytest.fixture
async def server_nodes(dsn: str, tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Start ``count`` real server processes on one database (``env`` adds settings) and wait until each is
    healthy; all are stopped at the end, even those that never came up."""
    procs: list[subprocess.Popen[bytes]] = []

    async def start(count: int, **env: str) -> list[str]:
        ports, first = [free_port() for _ in range(count)], len(procs)
        procs.extend([_spawn(dsn, tmp_path, first + i, port, **env) for i, port in enumerate(ports)])
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url in urls:
            await eventually(lambda url=url: healthy(url), timeout=30, interval=0.1)  # type: ignore[misc]
        return urls

    try:
        yield start
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
async def two_nodes(server_nodes: NodeFactory) -> list[str]:
    """Two real server processes (``phonefleet-server``) on one database, maintenance every 0.2 s."""
    return await server_nodes(2)


ServerProcess = Callable[..., Awaitable[str]]


@pytest.fixture
def server_process(server_nodes: NodeFactory) -> ServerProcess:
    """``await server_process(HEADER_TIMEOUT_SEC="1")``: one real server (``serve``, as deployed) with those
    ``PHONEFLEET_*`` settings; answers its URL once it is healthy."""

    async def start(**settings: str) -> str:
        (url,) = await server_nodes(1, **{f"PHONEFLEET_{k}": v for k, v in settings.items()})
        return url

    return start
