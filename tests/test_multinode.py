"""Two server processes on one database: transactional claiming never over-assigns, and work created
on one node reaches agents connected to the other."""

import asyncio
import contextlib
import json
import os
import signal

import aiohttp
import asyncpg
import psutil

from phonefleet.server import tokens
from phonefleet.sim.agent import SimAgent
from tests.conftest import ADMIN, eventually, open_url_job
from tests.server_processes import NodeFactory


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


def _listener_pid(url: str) -> int:
    """The process listening on ``url``'s port (a node started by the ``server_nodes`` fixture)."""
    port = int(url.rsplit(":", 1)[1])
    pids = {c.pid for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}
    assert len(pids) == 1, pids
    return pids.pop()


async def test_an_agent_whose_node_is_killed_finishes_its_running_work_on_another(
        server_nodes: NodeFactory, dsn: str) -> None:
    """SIGKILL the node holding an agent mid-job: reconnected to the other node, its hello hands back the same
    running assignments, and every phone's run is counted once."""
    first, second = await server_nodes(2)
    conn = await asyncpg.connect(dsn)
    agents: list[SimAgent] = []
    try:
        for i, url in enumerate((first, second)):
            _, token = await tokens.add_agent(conn, f"pc{i}")
            agents.append(SimAgent(url, token, [f"pc{i}-{n}" for n in range(5)]))
            await agents[-1].connect()
        orphan = agents[0]
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as session, \
                session.post(second + "/api/jobs", json=open_url_job()) as r:
            assert r.status == 201, await r.text()
            job_id: int = (await r.json())["id"]
        for agent in agents:  # the orphan's orders come from the other node (through the bus)
            await agent.wait_for(lambda agent=agent: len(agent.orders) == 5, timeout=20)  # type: ignore[misc]
            assert (await agent.start(sorted(agent.orders)))["ok"]
        running = sorted(orphan.orders)

        async def dropped() -> bool:
            return not orphan.sio.connected

        os.kill(_listener_pid(first), signal.SIGKILL)
        await eventually(dropped, timeout=20)
        orphan.base_url = second
        ack = await orphan.reconnect()
        assert ack is not None and sorted(o["assignment_id"] for o in ack["data"]["assignments"]) == running

        for agent in agents:
            assert (await agent.finish(sorted(agent.orders)))["ok"]

        async def completed() -> bool:
            return bool(await conn.fetchval("SELECT status = 'completed' FROM jobs WHERE id = $1", job_id))

        await eventually(completed, timeout=20, interval=0.1)
        row = await conn.fetchrow("""SELECT count(*) AS runs, count(DISTINCT device_id) AS phones,
                                            count(*) FILTER (WHERE status = 'completed') AS done
                                     FROM assignments WHERE job_id = $1""", job_id)
        assert row is not None and dict(row) == {"runs": 10, "phones": 10, "done": 10}
    finally:
        for agent in agents:
            with contextlib.suppress(Exception):
                await agent.disconnect()
        await conn.close()


async def test_a_fill_kicks_all_the_agents_another_node_holds_in_one_message(server_nodes: NodeFactory,
                                                                            dsn: str) -> None:
    """Node A claims phones of six agents connected to node B: one NOTIFY tells B to send all their orders
    (not one per agent), and every agent runs its phones' work. (B's maintenance is slow, so its sweep does
    not claim the new job first.)"""
    (node_a,) = await server_nodes(1)
    (node_b,) = await server_nodes(1, PHONEFLEET_MAINTENANCE_SEC="60")
    conn = await asyncpg.connect(dsn)
    listener = await asyncpg.connect(dsn)
    kicks: list[list[int]] = []

    def heard(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        message = json.loads(str(payload))
        if message.get("kind") == "kick":
            assert message.get("agent_id") is None, "the batched form"
            kicks.append(message["agent_ids"])

    await listener.add_listener("phonefleet", heard)
    agents: list[SimAgent] = []
    try:
        for i in range(6):
            _, token = await tokens.add_agent(conn, f"far{i}")
            agent = SimAgent(node_b, token, [f"far{i}-{n}" for n in range(3)], auto_finish=True)
            await agent.connect()
            agents.append(agent)
        await eventually(lambda: _idle(conn, 18), timeout=30, interval=0.1)
        async with (aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as session,
                    session.post(node_a + "/api/jobs", json=open_url_job(title="far")) as r):
            assert r.status == 201, await r.text()
            job_id = (await r.json())["id"]

        async def completed() -> bool:
            return bool(await conn.fetchval("SELECT completed_count = 18 FROM jobs WHERE id = $1", job_id))

        await eventually(completed, timeout=30, interval=0.1)
        kicked = {a for ids in kicks for a in ids}
        assert len(kicked) > 1, f"node A claimed and kicked the agents on node B: {kicks}"
        assert len(kicks) < len(kicked), f"one message for many agents: {kicks}"
    finally:
        for agent in agents:
            with contextlib.suppress(Exception):
                await agent.disconnect()
        await listener.close()
        await conn.close()


async def _idle(conn: asyncpg.Connection, n: int) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM devices WHERE state = 'idle'") >= n)
