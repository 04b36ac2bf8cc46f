"""Two server processes on one database: transactional claiming never over-assigns, and work created
on one node reaches agents connected to the other."""

import asyncio
import contextlib

import aiohttp
import asyncpg

from phonefleet.server import tokens
from phonefleet.sim.agent import SimAgent
from tests.conftest import ADMIN, eventually, open_url_job


async def test_two_server_processes_never_exceed_a_target(two_nodes: list[str], dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    agents: list[SimAgent] = []
    try:
        for i in range(4):
            _, token = await tokens.add_agent(conn, f"pc{i}")
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
