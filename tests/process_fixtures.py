"""A real ``phonefleet-server`` process (``serve``, as deployed) on a loopback port, stopped at the end."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ADMIN, eventually, free_port

ServerProcess = Callable[..., Awaitable[str]]


async def _healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def _spawn(env: dict[str, str], log_path: Path) -> "subprocess.Popen[bytes]":
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "phonefleet.server.cli"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
async def server_process(dsn: str, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """``await server_process(HEADER_TIMEOUT_SEC="1")`` starts one with those ``PHONEFLEET_*`` settings
    and answers its URL once it is healthy."""
    procs: list[subprocess.Popen[bytes]] = []

    async def start(**settings: str) -> str:
        port = free_port()
        env = {**os.environ, "DATABASE_URL": dsn, "PHONEFLEET_ADMIN_TOKEN": ADMIN, "PHONEFLEET_PORT": str(port),
               "PHONEFLEET_DATA_DIR": str(tmp_path / f"server{len(procs)}"),
               **{f"PHONEFLEET_{k}": v for k, v in settings.items()}}
        procs.append(_spawn(env, tmp_path / f"server{len(procs)}.log"))
        url = f"http://127.0.0.1:{port}"
        await eventually(lambda: _healthy(url), timeout=30, interval=0.1)
        return url

    yield start
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
