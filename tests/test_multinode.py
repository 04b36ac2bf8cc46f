"""Two server processes on one database: transactional claiming never over-assigns, and work created
on one node reaches agents connected to the other."""

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from phonefleet.server.auth import AGENT_PREFIX, hash_token, new_token
from phonefleet.sim.agent import SimAgent
from tests.conftest import ADMIN, eventually, free_port, open_url_job


async def healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def _spawn(dsn: str, tmp_path: Path, i: int, port: int) -> "subprocess.Popen[bytes]":
    env = {**os.environ, "DATABASE_URL": dsn, "PHONEFLEET_ADMIN_TOKEN": ADMIN, "PHONEFLEET_PORT": str(port),
           "PHONEFLEET_DATA_DIR": str(tmp_path / f"node{i}"), "PHONEFLEET_MAINTENANCE_SEC": "0.2",
           "PHONEFLEET_AGENT_GRACE_SEC": "10"}
    with (tmp_path / f"node{i}.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "phonefleet.server.cli"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
async def two_nodes(dsn: str, tmp_path: Path) -> AsyncIterator[list[str]]:
    """Two real server processes (``phonefleet-server``) on one database, maintenance every 0.2 s; stopped
    even when they never came up."""
    ports = [free_port(), free_port()]
    procs = [_spawn(dsn, tmp_path, i, port) for i, port in enumerate(ports)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            await eventually(lambda url=url: healthy(url), timeout=30, interval=0.1)  # type: ignore[misc]
        yield urls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


async def test_two_server_processes_never_exceed_a_target(two_nodes: list[str], dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    agents: list[SimAgent] = []
    try:
        for i in range(4):
            token = new_token(AGENT_PREFIX)
            await conn.execute("INSERT INTO agents (name, token_hash) VALUES ($1, $2)", f"pc{i}", hash_token(token))
            agent = SimAgent(two_nodes[i % 2], token, [f"pc{i}-{n:02d}" for n in range(10)], auto_finish=True)
            await agent.connect()
            agents.append(agent)

        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as session:
            async def create(n: int) -> int:
                body = open_url_job(title=f"job {n}", target_type="device_count", target_value=15, priority=n % 3)
                async with session.post(two_nodes[n % 2] + "/api/jobs", json=body) as r:
                    assert r.status == 201, await r.text()
                    job_id: int = (await r.json())["id"]
                    return job_id

            job_ids = await asyncio.gather(*(create(n) for n in range(20)))

        async def all_completed() -> bool:
            n = await conn.fetchval("SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'completed'", job_ids)
            return bool(n == len(job_ids))

        await eventually(all_completed, timeout=60, interval=0.2)
        rows = await conn.fetch(
            """SELECT j.id, j.target_count, j.assigned_count, j.completed_count,
                      count(a.id) AS runs, count(DISTINCT a.device_id) AS phones
               FROM jobs j JOIN assignments a ON a.job_id = j.id WHERE j.id = ANY($1) GROUP BY j.id""",
            job_ids,
        )
        assert len(rows) == 20
        for r in rows:
            assert r["target_count"] == 15
            assert r["runs"] == r["phones"] == r["assigned_count"] == r["completed_count"] == 15, dict(r)
        per_node = await conn.fetch("SELECT agent_id, count(*) FROM assignments GROUP BY agent_id")
        assert len(per_node) == 4, "agents on both nodes took work"
    finally:
        for agent in agents:
            with contextlib.suppress(Exception):
                await agent.disconnect()
        await conn.close()
