"""Tokens end when an operator says so: an agent's token is revoked or rotated, a named admin token is
revoked, over REST on any node or by the CLI, and every node drops the sockets it held at once. A revoked
agent's phones go offline and their work goes back to the jobs, as when its grace expires."""

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import socketio

from phonefleet.server.app import ensure_admin_token
from phonefleet.server.database import create_pool
from phonefleet.server.tokens import revoke_admin
from phonefleet.sim.agent import SimAgent, SimDashboard
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job
from tests.server_processes import NodeFactory

# Grace and lease far beyond every wait below: what happens here is the revocation's doing, not theirs.
# The periodic token check is off (an hour), so a drop within seconds is the bus message's doing.
NODE_ENV = {"PHONEFLEET_AGENT_GRACE_SEC": "120", "PHONEFLEET_LEASE_SEC": "120",
            "PHONEFLEET_TOKEN_RECHECK_SEC": "3600", "PHONEFLEET_RETRY_BASE_SEC": "0.1",
            "PHONEFLEET_RETRY_MAX_SEC": "0.2"}
DROP_SEC = 4.0
"""A revoked token's socket is gone within this long, on every node."""
LONG_RUN = [{"type": "open_url", "url": "https://example.com/long", "duration_sec": 600}]


@dataclass
class Cluster:
    """Two real server processes on one database, an HTTP session, and the sim clients to close."""

    urls: list[str]
    dsn: str
    session: aiohttp.ClientSession
    clients: list[SimAgent | SimDashboard] = field(default_factory=list)

    async def request(self, node: int, method: str, path: str, *, token: str | None = ADMIN,
                      json: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.urls[node] + path, json=json, headers=headers) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def ok(self, node: int, method: str, path: str, json: Any = None, expect: int = 200) -> Any:
        status, body = await self.request(node, method, path, json=json)
        assert status == expect, (status, body)
        return body

    async def add_agent(self, name: str) -> tuple[int, str]:
        created = await self.ok(0, "POST", "/api/agents", {"name": name}, expect=201)
        return int(created["agent"]["id"]), str(created["token"])

    async def agent(self, node: int, token: str, serials: list[str], *, hello: bool = True) -> SimAgent:
        agent = SimAgent(self.urls[node], token, serials)
        self.clients.append(agent)
        await agent.connect(hello=hello)
        return agent

    async def dashboard(self, node: int, token: str) -> SimDashboard:
        dashboard = SimDashboard(self.urls[node], token)
        self.clients.append(dashboard)
        await dashboard.connect()
        return dashboard

    async def assignments(self, job_id: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.ok(0, "GET", f"/api/jobs/{job_id}/assignments"))["items"]
        return items

    async def device_states(self, agent_name: str) -> list[str]:
        return [d["state"] for d in await self.ok(0, "GET", "/api/devices") if d["agent_name"] == agent_name]


@pytest.fixture
async def cluster(server_nodes: NodeFactory, dsn: str) -> AsyncIterator[Cluster]:
    urls = await server_nodes(2, **NODE_ENV)
    async with aiohttp.ClientSession() as session:
        c = Cluster(urls, dsn, session)
        try:
            yield c
        finally:
            for client in c.clients:
                if client.sio.connected:
                    with contextlib.suppress(Exception):
                        await client.disconnect()


def server_cli(dsn: str, *args: str) -> "subprocess.CompletedProcess[str]":
    """``phonefleet-server ARGS`` as its own process, against the test database (DATABASE_URL)."""
    env = {**os.environ, "DATABASE_URL": dsn, "PHONEFLEET_ADMIN_TOKEN": ADMIN}
    return subprocess.run([sys.executable, "-m", "phonefleet.server.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


async def run_cli(dsn: str, *args: str) -> "subprocess.CompletedProcess[str]":
    return await asyncio.to_thread(server_cli, dsn, *args)


def refused(done: "subprocess.CompletedProcess[str]", *words: str) -> None:
    """The CLI failed with a one-line reason naming ``words``, not a traceback."""
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)


async def disconnected(client: SimAgent | SimDashboard) -> None:
    async def gone() -> bool:
        return not client.sio.connected

    await eventually(gone, timeout=DROP_SEC)


async def refused_everywhere(c: Cluster, token: str) -> None:
    """The token answers 401 on every node, and cannot open a socket again."""
    for node in range(len(c.urls)):
        for method, path, body in (("GET", "/api/agent/assignments", None),
                                   ("POST", "/api/agent/events", {"events": [{"event": "agent:heartbeat",
                                                                              "data": {}}]})):
            status, answer = await c.request(node, method, path, token=token, json=body)
            assert status == 401, (node, path, status, answer)
            assert answer["error"]["code"] == "unauthorized"
        with pytest.raises(socketio.exceptions.ConnectionError):
            await SimAgent(c.urls[node], token, []).connect(hello=False)


@dataclass
class Doomed:
    """An agent on node 0 running one job's assignment and holding another's unstarted; the same token has a
    second socket on node 1 (a copy of the PC, or a thief); a survivor with two idle phones on node 1."""

    agent_id: int
    token: str
    agent: SimAgent
    copy: SimAgent
    survivor: SimAgent
    running: dict[str, Any]
    unstarted: dict[str, Any]


async def doomed_agent(c: Cluster) -> Doomed:
    agent_id, token = await c.add_agent("doomed")
    agent = await c.agent(0, token, ["doomed-0", "doomed-1"])
    jobs = [await c.ok(0, "POST", "/api/jobs", open_url_job(title=f"job {n}", target_type="device_count",
                                                               target_value=1, max_retries=2, plan=LONG_RUN),
                       expect=201) for n in (1, 2)]
    await agent.wait_for(lambda: len(agent.orders) == 2)
    running, unstarted = (next(o for o in agent.orders.values() if o["job_id"] == j["id"]) for j in jobs)
    assert (await agent.start([running["assignment_id"]]))["data"]["started"] == [running["assignment_id"]]
    copy = await c.agent(1, token, [], hello=False)
    _, survivor_token = await c.add_agent("survivor")
    survivor = await c.agent(1, survivor_token, ["survivor-0", "survivor-1"])
    return Doomed(agent_id, token, agent, copy, survivor, running, unstarted)


async def work_went_back(c: Cluster, d: Doomed) -> None:
    """The doomed agent's phones are offline, its work ended as lost, and both slots ran on the survivor."""
    async def offline() -> bool:
        return await c.device_states("doomed") == ["offline", "offline"]

    await eventually(offline, timeout=15)
    for order in (d.running, d.unstarted):
        rows = {r["id"]: r for r in await c.assignments(order["job_id"])}
        mine = rows[order["assignment_id"]]
        assert (mine["status"], mine["error_code"]) == ("failed", "lost"), mine
    await d.survivor.wait_for(lambda: len(d.survivor.orders) == 2, timeout=15)
    retries = sorted(d.survivor.orders.values(), key=lambda o: o["job_id"])
    assert [(o["job_id"], o["attempt"]) for o in retries] == [(d.running["job_id"], 2), (d.unstarted["job_id"], 2)]
    await d.survivor.finish([o["assignment_id"] for o in retries])
    for order in (d.running, d.unstarted):
        job = await c.ok(0, "GET", f"/api/jobs/{order['job_id']}")
        assert (job["status"], job["completed_count"], job["failed_count"]) == ("completed", 1, 0), job
    [listed] = [a for a in await c.ok(0, "GET", "/api/agents") if a["name"] == "doomed"]
    assert listed["token_revoked"] is True and listed["status"] == "offline"


# ---------------------------------------------------------------------------- agents: revoke


async def test_agent_revoked_over_rest_on_one_node_is_cut_off_on_every_node(cluster: Cluster) -> None:
    d = await doomed_agent(cluster)
    status, body = await cluster.request(1, "DELETE", f"/api/agents/{d.agent_id}/token")
    assert status == 204, body
    await disconnected(d.agent)  # held by node 0: told over the bus
    await disconnected(d.copy)  # held by node 1, which made the revocation
    await refused_everywhere(cluster, d.token)
    await work_went_back(cluster, d)
    assert d.survivor.sio.connected, "other agents keep their sockets"


async def test_agent_revoked_by_the_cli_is_cut_off_on_every_node(cluster: Cluster) -> None:
    d = await doomed_agent(cluster)
    done = await run_cli(cluster.dsn, "agents", "revoke", "doomed")
    assert done.returncode == 0, done.stderr
    assert d.token not in done.stdout + done.stderr
    await disconnected(d.agent)
    await disconnected(d.copy)
    await refused_everywhere(cluster, d.token)
    await work_went_back(cluster, d)


# ---------------------------------------------------------------------------- agents: rotate


async def test_rotated_agent_is_cut_off_and_works_again_with_its_new_token(cluster: Cluster) -> None:
    agent_id, old = await cluster.add_agent("rack")
    agent = await cluster.agent(0, old, ["rack-0"])
    status, rotated = await cluster.request(1, "POST", f"/api/agents/{agent_id}/token")
    assert status == 201, rotated
    new = rotated["token"]
    assert new.startswith("pfagt_") and new != old and rotated["agent"]["id"] == agent_id
    assert new not in str(await cluster.ok(0, "GET", "/api/agents")), "the new token is answered once"
    await disconnected(agent)
    await refused_everywhere(cluster, old)

    # The CLI rotates too, printing the token; the one REST gave is cut off in turn.
    again = await cluster.agent(0, new, ["rack-0"])
    done = await run_cli(cluster.dsn, "agents", "rotate", "rack")
    assert done.returncode == 0, done.stderr
    newest = done.stdout.strip()
    assert newest.startswith("pfagt_") and newest not in (old, new)
    await disconnected(again)
    await refused_everywhere(cluster, new)

    final = await cluster.agent(0, newest, ["rack-0"])

    async def idle() -> bool:
        return await cluster.device_states("rack") == ["idle"]

    await eventually(idle, timeout=10)
    job = await cluster.ok(1, "POST", "/api/jobs", open_url_job(), expect=201)
    await final.wait_for(lambda: len(final.orders) == 1, timeout=15)
    await final.finish(list(final.orders))
    done_job = await cluster.ok(1, "GET", f"/api/jobs/{job['id']}")
    assert (done_job["status"], done_job["completed_count"]) == ("completed", 1)
    [listed] = await cluster.ok(0, "GET", "/api/agents")
    assert listed["token_revoked"] is False and listed["connected"] is True


# ---------------------------------------------------------------------------- admins


async def test_named_admin_token_is_listed_and_revoked_on_every_node(cluster: Cluster) -> None:
    added = await run_cli(cluster.dsn, "admins", "add", "ci")
    assert added.returncode == 0, added.stderr
    ci = added.stdout.strip()
    assert ci.startswith("pfadm_")
    on_node = [await cluster.dashboard(0, ci), await cluster.dashboard(1, ci)]
    env_dashboard = await cluster.dashboard(0, ADMIN)
    status, _jobs = await cluster.request(1, "GET", "/api/jobs", token=ci)
    assert status == 200

    listed = await run_cli(cluster.dsn, "admins", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"env", "ci"}
    assert "not revocable" in rows["env"] and "never" not in rows["ci"], listed.stdout  # ci: last used just now
    assert ci not in listed.stdout and ADMIN not in listed.stdout

    revoked = await run_cli(cluster.dsn, "admins", "revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    for dashboard in on_node:
        await disconnected(dashboard)
    for node in (0, 1):
        status, answer = await cluster.request(node, "GET", "/api/jobs", token=ci)
        assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    with pytest.raises(socketio.exceptions.ConnectionError):
        await SimDashboard(cluster.urls[1], ci).connect()
    assert env_dashboard.sio.connected, "the environment's token is untouched"


async def test_token_cli_refuses_bad_names_with_a_clear_error_and_changes_nothing(dsn: str) -> None:
    assert (await run_cli(dsn, "admins", "add", "ci")).returncode == 0
    assert (await run_cli(dsn, "agents", "add", "pc")).returncode == 0
    conn = await asyncpg.connect(dsn)
    try:
        world = "SELECT (SELECT array_agg(token_hash || name ORDER BY id) FROM admin_tokens), " \
                "(SELECT array_agg(token_hash || name ORDER BY id) FROM agents)"
        before = await conn.fetchrow(world)
        refused(await run_cli(dsn, "admins", "add", "ci"), "'ci' exists")
        refused(await run_cli(dsn, "admins", "add", "env"), "reserved")
        refused(await run_cli(dsn, "admins", "add", "no spaces!"), "name")
        refused(await run_cli(dsn, "admins", "revoke", "nobody"), "no admin token named 'nobody'")
        refused(await run_cli(dsn, "admins", "revoke", "env"), "PHONEFLEET_ADMIN_TOKEN", "cannot be revoked")
        refused(await run_cli(dsn, "agents", "revoke", "nobody"), "no agent named 'nobody'")
        refused(await run_cli(dsn, "agents", "rotate", "nobody"), "no agent named 'nobody'")
        assert await conn.fetchrow(world) == before
    finally:
        await conn.close()


# ---------------------------------------------------------------------------- REST, one in-process server


async def test_admin_tokens_over_rest(server: RunningServer) -> None:
    created = await server.ok("POST", "/api/admins", {"name": "ops"})
    token = created["token"]
    assert created["admin"]["name"] == "ops" and created["admin"]["source"] == "stored"
    status, _ = await server.request("GET", "/api/jobs", token=token)
    assert status == 200
    listed = await server.ok("GET", "/api/admins")
    assert [(a["name"], a["source"]) for a in listed] == [("env", "env"), ("ops", "stored")]
    assert listed[1]["last_used_at"] is not None and token not in str(listed)
    dashboard = SimDashboard(server.url, token)
    await dashboard.connect()
    try:
        status, body = await server.request("DELETE", "/api/admins/ops")
        assert status == 204, body
        await disconnected(dashboard)
    finally:
        if dashboard.sio.connected:
            await dashboard.disconnect()
    status, answer = await server.request("GET", "/api/jobs", token=token)
    assert status == 401, answer
    assert [a["name"] for a in await server.ok("GET", "/api/admins")] == ["env"]


async def test_bad_token_requests_answer_clear_errors_and_change_nothing(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    await server.ok("POST", "/api/admins", {"name": "ops"})
    before = (await server.ok("GET", "/api/agents"), await server.ok("GET", "/api/admins"))
    cases: list[tuple[str, str, Any, int, str]] = [
        ("DELETE", "/api/agents/999999/token", None, 404, "not_found"),
        ("POST", "/api/agents/999999/token", None, 404, "not_found"),
        ("DELETE", "/api/agents/abc/token", None, 404, "not_found"),
        ("POST", "/api/agents/1e3/token", None, 404, "not_found"),
        ("DELETE", "/api/admins/nobody", None, 404, "not_found"),
        ("DELETE", "/api/admins/env", None, 409, "conflict"),
        ("POST", "/api/admins", {"name": "ops"}, 409, "conflict"),
        ("POST", "/api/admins", {"name": "env"}, 409, "conflict"),
        ("POST", "/api/admins", {"name": "no spaces"}, 422, "validation_error"),
        ("POST", "/api/admins", {"name": ""}, 422, "validation_error"),
        ("POST", "/api/admins", {"name": "x" * 101}, 422, "validation_error"),
        ("POST", "/api/admins", {"name": "ok", "token": "pfadm_mine"}, 422, "validation_error"),
        ("POST", "/api/admins", {}, 422, "validation_error"),
    ]
    for method, path, body, code, error in cases:
        status, answer = await server.request(method, path, json=body)
        assert (status, answer["error"]["code"]) == (code, error), (method, path, body, answer)
        assert answer["error"]["message"], answer
        if code == 422:
            assert answer["error"]["details"][0]["field"] == "name" or "token" in str(answer), answer
    for method, path in (("DELETE", f"/api/agents/{agent.agent_id}/token"), ("GET", "/api/admins"),
                         ("DELETE", "/api/admins/ops")):
        status, answer = await server.request(method, path, token=agent.token)
        assert status == 403, (path, answer)
    assert (await server.ok("GET", "/api/agents"), await server.ok("GET", "/api/admins")) == before
    assert agent.sio.connected and (await agent.call("agent:heartbeat", {}))["ok"] is True


async def test_a_missed_revocation_message_still_drops_the_sockets(server_factory: Any) -> None:
    """A node whose listening connection was down when the message went out finds out within its recheck,
    and the rescuer retires the agent at its next run (its grace is a minute: not what takes it offline)."""
    server: RunningServer = await server_factory(token_recheck_sec=0.5, agent_grace_sec=60)
    agent = await server.sim_agent("pc", 1)
    created = await server.ok("POST", "/api/admins", {"name": "ops"})
    dashboard = SimDashboard(server.url, created["token"])
    await dashboard.connect()
    try:
        async with server.services.pool.acquire() as conn:  # as the CLI would, minus its pg_notify
            await conn.execute("UPDATE agents SET token_hash = NULL, retire_pending = true WHERE id = $1",
                               agent.agent_id)
            await conn.execute("DELETE FROM admin_tokens WHERE name = 'ops'")
        await eventually(lambda: _gone(agent), timeout=10)
        await eventually(lambda: _gone(dashboard), timeout=10)

        async def offline() -> bool:
            return [d["state"] for d in await server.ok("GET", "/api/devices")] == ["offline"]

        await eventually(offline, timeout=10)
    finally:
        if dashboard.sio.connected:
            await dashboard.disconnect()


async def _gone(client: SimAgent | SimDashboard) -> bool:
    return not client.sio.connected


# ---------------------------------------------------------------------------- the start-up token


async def test_admin_token_is_made_once_kept_private_and_never_comes_back_once_revoked(dsn: str,
                                                                                       tmp_path: Path) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=4)
    try:
        first, second = await asyncio.gather(ensure_admin_token(pool, tmp_path / "a", None),
                                             ensure_admin_token(pool, tmp_path / "b", None))
        made = [r for r in (first, second) if r.generated]
        assert len(made) == 1, "two nodes starting at once make one token"
        token, path = made[0].generated, made[0].kept_in
        assert path is not None and path.read_text().strip() == token
        assert path.stat().st_mode & 0o777 == 0o600
        again = await ensure_admin_token(pool, path.parent, None)
        assert (again.generated, again.kept_in) == (None, path), "a kept token is not shown again"

        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO admin_tokens (name, token_hash) VALUES ('ops', 'x')")
            await revoke_admin(conn, "initial", node="test")
        after = await ensure_admin_token(pool, path.parent, None)
        assert (after.generated, after.kept_in) == (None, None)
        assert not path.exists(), "a revoked token's file is removed, not replaced"

        with_env = await ensure_admin_token(pool, tmp_path / "c", ADMIN)
        assert (with_env.generated, with_env.from_env) == (None, True)
    finally:
        await pool.close()


async def test_a_server_with_the_environments_token_never_prints_it(server_nodes: NodeFactory,
                                                                   tmp_path: Path) -> None:
    await server_nodes(1)

    async def banner() -> str | None:
        log = (tmp_path / "node0.log").read_text()
        return log if "admin token from PHONEFLEET_ADMIN_TOKEN" in log else None

    log = await eventually(banner, timeout=10)
    assert log is not None and ADMIN not in log and "admin token:" not in log


async def test_a_revoked_agent_that_is_not_connected_is_retired_at_once(cluster: Cluster) -> None:
    """No socket to drop: the revocation still wakes the maintenance leader, which retires the agent."""
    agent_id, _token = await cluster.add_agent("pc")
    assert (await run_cli(cluster.dsn, "agents", "revoke", "pc")).returncode == 0
    conn = await asyncpg.connect(cluster.dsn)
    try:
        async def retired() -> bool:
            row = await conn.fetchrow("SELECT token_hash, retire_pending, status, token_changed_at FROM agents "
                                      "WHERE id = $1", agent_id)
            assert row is not None
            return bool(row["token_hash"] is None and not row["retire_pending"] and row["status"] == "offline"
                        and row["token_changed_at"] is not None)

        await eventually(retired, timeout=10)
    finally:
        await conn.close()
