"""A database outage answers 503 ``database_unavailable`` on every route (auth included: never a 401),
an error ack marked retryable on the agent socket, a clean refusal on socket connects, and heals by
itself: a real server whose link to the real PostgreSQL goes through a TCP fault proxy."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import socketio
from pydantic import BaseModel

from phonefleet.protocol import events as ev
from phonefleet.protocol.artifacts import ArtifactLost
from phonefleet.protocol.health import FleetPolicyPatch, QuarantineRequest, RecoverRequest
from phonefleet.protocol.models import (
    AdminTokenCreate,
    AgentCreate,
    AgentPatch,
    DevicePatch,
    JobBatch,
    JobCreate,
    JobPatch,
    RequeueBody,
    ScheduleCreate,
    SchedulePatch,
)
from phonefleet.protocol.people import PasswordChange, PersonalTokenCreate, PersonCreate, PersonPatch, SignIn
from phonefleet.protocol.screen import InputBody
from phonefleet.protocol.teams import TeamCreate, TeamPatch
from phonefleet.server import outage
from phonefleet.server.api import ROUTES
from phonefleet.server.routes import Route
from phonefleet.sim.agent import SimAgent
from phonefleet.sim.netfault import TcpFaultProxy
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job
from tests.db_fault_fixtures import ProxiedDatabase

ServerFactory = Callable[..., Awaitable[RunningServer]]


class Fleet:
    """One of each resource, so every route gets a path that names something real."""

    def __init__(self, server: RunningServer, agent: SimAgent, ids: dict[str, int]) -> None:
        self.server, self.agent, self.ids = server, agent, ids

    def path(self, route: Route) -> str:
        resource = route.path.split("/")[2] if route.path.startswith("/api/") else ""
        kind = {"jobs": "job", "devices": "device", "agents": "agent", "schedules": "schedule", "teams": "team"}.get(
            resource, "assignment")
        name = "ci" if resource == "admins" else "shot.png"
        return route.path.replace("{id}", str(self.ids[kind])).replace("{name}", name)

    def body(self, route: Route) -> dict[str, Any]:
        if route.raw_body:
            return {"data": b"\x89PNG\r\n\x1a\n"}
        bodies: dict[type[BaseModel], Any] = {
            JobCreate: open_url_job(target_type="device_count", target_value=1),
            JobPatch: {"priority": 3}, JobBatch: {"action": "pause", "ids": [self.ids["job"]]},
            RequeueBody: {"scope": "failed"}, DevicePatch: {"paused": False}, AgentCreate: {"name": "another-pc"},
            AgentPatch: {"max_running": 2}, SchedulePatch: {"enabled": False}, AdminTokenCreate: {"name": "ci"},
            ScheduleCreate: {"name": "nightly-2", "interval_sec": 3600, "enabled": False,
                             "template": open_url_job()},
            ev.AgentEventBatch: {"events": [{"event": ev.AGENT_HEARTBEAT, "data": {"running": []}}]},
            QuarantineRequest: {"reason": "checked by hand"}, RecoverRequest: {"rung": "reconnect"},
            FleetPolicyPatch: {"quarantine": {"cooldown_sec": 900}}, InputBody: {"type": "tap", "x": 10, "y": 20},
            ArtifactLost: {"reason": "the file is gone"},
            SignIn: {"name": "nobody", "password": "wrong"}, PersonCreate: {"name": "pat", "role": "viewer"},
            PersonPatch: {"role": "viewer"}, PersonalTokenCreate: {"name": "ci"},
            PasswordChange: {"current_password": "old", "new_password": "a new passphrase"},
            TeamCreate: {"name": "crew"}, TeamPatch: {"name": "default"},
        }
        return {} if route.body is None else {"json": bodies[route.body]}

    def token(self, route: Route) -> str | None:
        return {"public": None, "agent": self.agent.token}.get(route.access, ADMIN)

    async def call(self, route: Route) -> tuple[int, dict[str, str], Any]:
        headers = {"Authorization": f"Bearer {t}"} if (t := self.token(route)) else {}
        async with self.server.session.request(route.method, self.server.url + self.path(route), headers=headers,
                                               **self.body(route)) as r:
            body = await r.json() if r.content_type == "application/json" else await r.read()
            return r.status, dict(r.headers), body


async def _fleet(server: RunningServer) -> Fleet:
    agent = await server.sim_agent("pc", 1)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) == 1)
    assignment_id = next(iter(agent.orders))
    status, _ = await server.request("PUT", f"/api/agent/artifacts/{assignment_id}/shot.png", token=agent.token,
                                     data=b"\x89PNG\r\n\x1a\n")
    assert status == 201
    schedule = await server.ok("POST", "/api/schedules", {"name": "nightly", "interval_sec": 3600,
                                                          "enabled": False, "template": open_url_job()})
    (device,) = await server.ok("GET", "/api/devices")
    assert agent.agent_id is not None
    return Fleet(server, agent, {"job": job["id"], "assignment": assignment_id, "device": device["id"],
                                 "agent": agent.agent_id, "schedule": schedule["id"], "team": 1})


def _assert_outage_answer(route: Route, status: int, headers: dict[str, str], body: Any) -> None:
    where = f"{route.method} {route.path}"
    assert status == 503, (where, status, body)
    assert headers["Content-Type"].startswith("application/json"), where
    assert headers["Retry-After"] == str(outage.RETRY_AFTER_SEC), where
    assert body["error"]["code"] == "database_unavailable", (where, body)
    assert [d["field"] for d in body["error"]["details"]] == ["database"], (where, body)


async def _assert_every_route_reports_the_outage(fleet: Fleet) -> None:
    for route in ROUTES:
        status, headers, body = await fleet.call(route)
        if route.database:
            _assert_outage_answer(route, status, headers, body)
        elif route.path == "/metrics":  # still scraped, saying the database is down, with no stale counts
            text = body.decode()
            assert status == 200 and "phonefleet_database_up 0.0" in text and "phonefleet_jobs{" not in text
        else:  # the document needs no database
            assert status == 200, (route.path, status)


BACKGROUND_LOOPS = {"maintenance", "distributor", "dashboard-flush", "bus-watch"}


async def _assert_every_route_answers_normally(fleet: Fleet) -> None:
    await eventually(lambda: _status_is(fleet, ROUTES[0], 200), timeout=20)
    running = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
    assert running >= BACKGROUND_LOOPS, f"loops that died in the outage: {BACKGROUND_LOOPS - running}"
    for route in ROUTES:
        status, _, body = await fleet.call(route)
        assert status < 500, (route.method, route.path, status, body)
    _, _, text = await fleet.call(next(r for r in ROUTES if r.path == "/metrics"))
    assert "phonefleet_database_up 1.0" in text.decode() and "phonefleet_jobs{" in text.decode()


async def _status_is(fleet: Fleet, route: Route, wanted: int) -> bool:
    return (await fleet.call(route))[0] == wanted


async def _agent_event_is_refused_as_retryable(agent: SimAgent) -> None:
    ack = await agent.call(ev.AGENT_HEARTBEAT, {"running": []})
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] == "database_unavailable" and ack["error"]["retryable"] is True, ack


async def _connects_are_refused_cleanly(server: RunningServer, agent_token: str) -> None:
    for namespace, token in ((ev.AGENT_NAMESPACE, agent_token), (ev.DASHBOARD_NAMESPACE, ADMIN)):
        client = socketio.AsyncClient(reconnection=False)
        refusals: list[Any] = []
        client.on("connect_error", refusals.append, namespace=namespace)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(server.url, namespaces=[namespace], auth={"token": token},
                                 transports=["websocket"], wait_timeout=10)
        await client.disconnect()
        (refusal,) = refusals
        assert refusal["data"]["code"] == "database_unavailable" and refusal["data"]["retryable"], refusal


async def test_refused_database_answers_503_everywhere_and_heals_without_restart(
    proxied_db: ProxiedDatabase, server_factory: ServerFactory
) -> None:
    server = await server_factory(database_url=proxied_db.dsn)
    fleet = await _fleet(server)
    proxied_db.proxy.refuse()
    await _assert_every_route_reports_the_outage(fleet)
    await _agent_event_is_refused_as_retryable(fleet.agent)
    await _connects_are_refused_cleanly(server, fleet.agent.token)
    proxied_db.proxy.heal()
    await eventually(lambda: _status_is(fleet, ROUTES[0], 200), timeout=20)
    assert (await fleet.agent.call(ev.AGENT_HEARTBEAT, {"running": []}))["ok"]
    await _assert_every_route_answers_normally(fleet)  # (this also revokes and rotates the agent's token)
    dashboard = socketio.AsyncClient(reconnection=False)  # connects are accepted again
    await dashboard.connect(server.url, namespaces=[ev.DASHBOARD_NAMESPACE], auth={"token": ADMIN},
                            transports=["websocket"], wait_timeout=10)
    await dashboard.disconnect()


async def _stuck_in_the_link(proxy: TcpFaultProxy, fleet: Fleet, route: Route) -> asyncio.Task[Any]:
    """A request whose query the stalled proxy has swallowed: it is in flight on the database link."""
    before = proxy.stalled_bytes
    proxy.stall()
    task = asyncio.create_task(fleet.call(route))
    await eventually(lambda: _true(proxy.stalled_bytes > before), timeout=10)
    assert not task.done()
    return task


async def _true(value: bool) -> bool:
    return value


async def test_link_cut_mid_query_answers_503_then_heals(
    proxied_db: ProxiedDatabase, server_factory: ServerFactory
) -> None:
    server = await server_factory(database_url=proxied_db.dsn)
    fleet = await _fleet(server)
    jobs = next(r for r in ROUTES if r.method == "GET" and r.path == "/api/jobs")
    task = await _stuck_in_the_link(proxied_db.proxy, fleet, jobs)
    proxied_db.proxy.refuse()  # resets the connection under the running query
    _assert_outage_answer(jobs, *await asyncio.wait_for(task, 20))

    proxied_db.proxy.heal()
    await eventually(lambda: _status_is(fleet, jobs, 200), timeout=20)
    # A socket event whose query is cut the same way is acked as retryable, not dropped.
    proxied_db.proxy.stall()
    before = proxied_db.proxy.stalled_bytes
    ack = asyncio.create_task(fleet.agent.call(ev.AGENT_HEARTBEAT, {"running": []}))
    await eventually(lambda: _true(proxied_db.proxy.stalled_bytes > before), timeout=10)
    proxied_db.proxy.cut()
    answer = await asyncio.wait_for(ack, 20)
    assert answer["ok"] is False and answer["error"]["code"] == "database_unavailable", answer
    assert answer["error"]["retryable"] is True
    proxied_db.proxy.heal()
    await _assert_every_route_answers_normally(fleet)


async def test_stalled_database_times_out_into_503(proxied_db: ProxiedDatabase, server_factory: ServerFactory) -> None:
    """A link that swallows everything (no RST) ends in a timeout: 503 after ``db_timeout_sec``, not a hang."""
    server = await server_factory(database_url=proxied_db.dsn, db_timeout_sec=1.5)
    fleet = await _fleet(server)
    jobs = next(r for r in ROUTES if r.method == "GET" and r.path == "/api/jobs")
    task = await _stuck_in_the_link(proxied_db.proxy, fleet, jobs)
    _assert_outage_answer(jobs, *await asyncio.wait_for(task, 20))
    proxied_db.proxy.heal()
    await _assert_every_route_answers_normally(fleet)


async def test_backend_terminated_by_the_database_answers_503(
    proxied_db: ProxiedDatabase, server_factory: ServerFactory
) -> None:
    """PostgreSQL shutting a backend down under a query (57P01, as in a fast shutdown) is an outage too."""
    server = await server_factory(database_url=proxied_db.dsn)
    fleet = await _fleet(server)
    jobs = next(r for r in ROUTES if r.method == "GET" and r.path == "/api/jobs")
    admin = await asyncpg.connect(proxied_db.direct_dsn)
    try:
        locker = admin.transaction()
        await locker.start()
        await admin.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        task = asyncio.create_task(fleet.call(jobs))

        async def waiting_backends() -> list[int]:
            rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
            return [r["pid"] for r in rows]

        for pid in await eventually(waiting_backends, timeout=10):
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        _assert_outage_answer(jobs, *await asyncio.wait_for(task, 20))
        await locker.rollback()
    finally:
        await admin.close()
    await _assert_every_route_answers_normally(fleet)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "refused"), ConnectionResetError(), TimeoutError(),
    asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle of operation"),
    asyncpg.InterfaceError("connection is closed"), asyncpg.exceptions.CannotConnectNowError("starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection"), asyncpg.exceptions.CrashShutdownError("crash"),
    asyncpg.exceptions.TooManyConnectionsError("too many clients"), outage.DatabaseUnavailable("refused"),
])
def test_every_shape_of_an_outage_is_recognised(exc: BaseException) -> None:
    assert outage.is_database_outage(exc)
    ack = outage.outage_ack(exc)
    assert ack["error"]["code"] == "database_unavailable" and ack["error"]["retryable"] is True


@pytest.mark.parametrize("exc", [asyncpg.UniqueViolationError("dup"), asyncpg.DeadlockDetectedError("deadlock"),
                                 FileNotFoundError(2, "no such file"), ValueError("bug")])
def test_a_query_failure_or_a_bug_is_not_called_an_outage(exc: BaseException) -> None:
    assert not outage.is_database_outage(exc)
