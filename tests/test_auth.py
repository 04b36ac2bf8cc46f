"""Authentication and authorisation: admin tokens for REST and ``/dashboard``, one token per agent
for ``/agent`` and the polling routes, and an agent may touch only its own phones and assignments."""

from typing import Any

import pytest
import socketio

from phonefleet.protocol import events as ev
from phonefleet.sim.agent import SimAgent
from tests.conftest import ADMIN, Agents, RunningServer, eventually, open_url_job

ADMIN_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/jobs", None),
    ("POST", "/api/jobs", open_url_job()),
    ("GET", "/api/jobs/1", None),
    ("PATCH", "/api/jobs/1", {"status": "paused"}),
    ("DELETE", "/api/jobs/1", None),
    ("GET", "/api/jobs/1/assignments", None),
    ("GET", "/api/assignments", None),
    ("GET", "/api/devices", None),
    ("PATCH", "/api/devices/1", {"paused": True}),
    ("GET", "/api/agents", None),
    ("POST", "/api/agents", {"name": "intruder"}),
    ("GET", "/api/stats", None),
    ("GET", "/api/audit", None),
]
AGENT_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/agent/assignments", None),
    ("POST", "/api/agent/events", {"events": [{"event": "agent:heartbeat", "data": {}}]}),
]
ALL_ROUTES = ADMIN_ROUTES + AGENT_ROUTES
ROUTE_IDS = [f"{m} {p}" for m, p, _ in ALL_ROUTES]





def assert_error(body: Any, code: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message", "details"} <= set(error), body
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["details"], list), body


async def headers_request(server: RunningServer, method: str, path: str, headers: dict[str, str],
                          json: Any = None) -> tuple[int, Any]:
    async with server.session.request(method, server.url + path, json=json, headers=headers) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


async def world(server: RunningServer) -> Any:
    """What a refused request must not have changed (read with the admin token)."""
    jobs = await server.ok("GET", "/api/jobs")
    devices = await server.ok("GET", "/api/devices")
    agents = await server.ok("GET", "/api/agents")
    return (
        [(j["id"], j["status"], j["title"], j["priority"]) for j in jobs["items"]],
        sorted((d["id"], d["paused_by"]) for d in devices),
        sorted(a["name"] for a in agents),
    )


async def with_a_job_and_a_phone(server: RunningServer, agents: Agents) -> SimAgent:
    """Job 1 (waiting for phones) and phone 1 exist, so every route has something to reach."""
    agent = await agents("pc1", 1)
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=5))
    assert job["id"] == 1
    await agent.wait_for(lambda: len(agent.orders) == 1)
    return agent


# ---------------------------------------------------------------------------- REST: 401


@pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES, ids=ROUTE_IDS)
async def test_request_without_a_token_is_unauthorized(server: RunningServer, agents: Agents, method: str, path: str,
                                                       body: Any) -> None:
    await with_a_job_and_a_phone(server, agents)
    before = await world(server)
    status, answer = await server.request(method, path, token=None, json=body)
    assert status == 401, (status, answer)
    assert_error(answer, "unauthorized")
    assert await world(server) == before


@pytest.mark.parametrize("authorization", [
    "Bearer pfadm_not-a-real-token",
    "Bearer pfagt_not-a-real-token",
    "Bearer garbage",
    "Bearer " + "x" * 300,
    "Bearer " + ADMIN + "x",
    "Bearer " + ADMIN[:-1],
    "Basic " + ADMIN,
    "Bearer",
    "Bearer   ",
    ADMIN,
    "",
], ids=["admin-prefix", "agent-prefix", "garbage", "very-long", "admin-plus-one", "admin-minus-one", "basic",
        "bearer-only", "bearer-blank", "no-scheme", "empty"])
async def test_unknown_token_is_unauthorized_on_every_route(server: RunningServer, agents: Agents,
                                                            authorization: str) -> None:
    await with_a_job_and_a_phone(server, agents)
    before = await world(server)
    for method, path, body in ALL_ROUTES:
        status, answer = await headers_request(server, method, path, {"Authorization": authorization}, body)
        assert status == 401, (method, path, status, answer)
        assert_error(answer, "unauthorized")
    assert await world(server) == before


async def test_public_routes_need_no_token(server: RunningServer) -> None:
    for path in ("/healthz", "/livez", "/metrics", "/api/openapi.json"):
        status, _body = await server.request("GET", path, token=None)
        assert status == 200, path


# ---------------------------------------------------------------------------- REST: 403


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES, ids=[f"{m} {p}" for m, p, _ in ADMIN_ROUTES])
async def test_agent_token_on_an_admin_route_is_forbidden(server: RunningServer, agents: Agents, method: str,
                                                          path: str, body: Any) -> None:
    agent = await with_a_job_and_a_phone(server, agents)
    before = await world(server)
    status, answer = await server.request(method, path, token=agent.token, json=body)
    assert status == 403, (status, answer)
    assert_error(answer, "forbidden")
    assert await world(server) == before
    assert agent.events(ev.DEVICE_PAUSE) == agent.events(ev.JOB_PAUSED) == []


@pytest.mark.parametrize(("method", "path", "body"), AGENT_ROUTES, ids=[f"{m} {p}" for m, p, _ in AGENT_ROUTES])
async def test_admin_token_on_an_agent_route_is_forbidden(server: RunningServer, agents: Agents, method: str,
                                                          path: str, body: Any) -> None:
    await with_a_job_and_a_phone(server, agents)
    before = await world(server)
    status, answer = await server.request(method, path, json=body)
    assert status == 403, (status, answer)
    assert_error(answer, "forbidden")
    assert await world(server) == before


async def test_admin_token_cannot_report_an_agents_events(server: RunningServer, agents: Agents) -> None:
    agent = await with_a_job_and_a_phone(server, agents)
    [assignment_id] = agent.orders
    status, answer = await server.request("POST", "/api/agent/events", json={"events": [
        {"event": ev.ASSIGNMENT_FINISHED, "data": {"results": [{"assignment_id": assignment_id,
                                                                 "outcome": "completed"}]}}]})
    assert status == 403, (status, answer)
    assert_error(answer, "forbidden")
    job = await server.ok("GET", "/api/jobs/1")
    assert job["completed_count"] == 0


async def test_agent_token_works_on_the_agent_routes(server: RunningServer, agents: Agents) -> None:
    agent = await with_a_job_and_a_phone(server, agents)
    status, poll = await server.request("GET", "/api/agent/assignments", token=agent.token)
    assert status == 200, poll
    assert [a["assignment_id"] for a in poll["assignments"]] == list(agent.orders)
    status, answer = await server.request("POST", "/api/agent/events", token=agent.token,
                                          json={"events": [{"event": ev.AGENT_HEARTBEAT, "data": {}}]})
    assert status == 200, answer
    assert answer["results"][0]["ok"] is True


# ---------------------------------------------------------------------------- agents: tokens


async def test_registering_an_agent_answers_its_token_once(server: RunningServer) -> None:
    created = await server.ok("POST", "/api/agents", {"name": "rack-7"})
    token = created["token"]
    assert token.startswith("pfagt_") and len(token) > 30
    assert created["agent"]["name"] == "rack-7"
    # The token works, for REST and for the socket ...
    status, poll = await server.request("GET", "/api/agent/assignments", token=token)
    assert status == 200, poll
    assert poll["agent_id"] == created["agent"]["id"]
    agent = SimAgent(server.url, token, ["rack-7-000"])
    await agent.connect()
    assert agent.agent_id == created["agent"]["id"]
    await agent.disconnect()
    # ... and it is never shown again.
    listed = await server.ok("GET", "/api/agents")
    assert [a["name"] for a in listed] == ["rack-7"]
    assert token not in str(listed)
    assert "token" not in listed[0]
    # An agent's token is not an admin token.
    status, answer = await server.request("GET", "/api/agents", token=token)
    assert status == 403, answer


async def test_each_agent_gets_its_own_token(server: RunningServer) -> None:
    first = await server.ok("POST", "/api/agents", {"name": "pc-a"})
    second = await server.ok("POST", "/api/agents", {"name": "pc-b"})
    assert first["token"] != second["token"]
    for created in (first, second):
        _status, poll = await server.request("GET", "/api/agent/assignments", token=created["token"])
        assert poll["agent_id"] == created["agent"]["id"]


async def test_registering_an_existing_name_conflicts_and_keeps_the_old_token(server: RunningServer) -> None:
    created = await server.ok("POST", "/api/agents", {"name": "pc-a"})
    status, answer = await server.request("POST", "/api/agents", json={"name": "pc-a"})
    assert status == 409, answer
    assert_error(answer, "conflict")
    assert "token" not in str(answer)
    status, _poll = await server.request("GET", "/api/agent/assignments", token=created["token"])
    assert status == 200


async def test_registering_an_agent_needs_an_admin_token(server: RunningServer, agents: Agents) -> None:
    agent = await agents("pc1", 0)
    status, answer = await server.request("POST", "/api/agents", token=None, json={"name": "new"})
    assert status == 401, answer
    status, answer = await server.request("POST", "/api/agents", token=agent.token, json={"name": "new"})
    assert status == 403, answer
    assert [a["name"] for a in await server.ok("GET", "/api/agents")] == ["pc1"]


# ---------------------------------------------------------------------------- agents: only their own work


async def _two_agents(server: RunningServer, agents: Agents) -> tuple[SimAgent, SimAgent, int, int, int]:
    """Agents A and B with one phone each, each holding a delivered assignment of one job."""
    a = await agents("pc-a", 1)
    b = await agents("pc-b", 1)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await a.wait_for(lambda: len(a.orders) == 1)
    await b.wait_for(lambda: len(b.orders) == 1)

    async def delivered() -> bool:
        body = await server.ok("GET", f"/api/jobs/{job['id']}/assignments")
        return len(body["items"]) == 2 and all(x["status"] == "delivered" for x in body["items"])

    await eventually(delivered)
    [a_id] = a.orders
    [b_id] = b.orders
    return a, b, job["id"], a_id, b_id


async def _assignment(server: RunningServer, job_id: int, assignment_id: int) -> dict[str, Any]:
    body = await server.ok("GET", f"/api/jobs/{job_id}/assignments")
    [found] = [x for x in body["items"] if x["id"] == assignment_id]
    return {k: found[k] for k in ("status", "progress", "step_index", "error", "result", "started_at",
                                  "finished_at", "agent_id")}


def _foreign_reports(a_id: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (ev.ASSIGNMENT_STARTED, {"items": [{"assignment_id": a_id}]}),
        (ev.ASSIGNMENT_PROGRESS, {"items": [{"assignment_id": a_id, "step_index": 0, "step_count": 1,
                                             "progress": 0.5, "message": "not mine"}]}),
        (ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": a_id, "outcome": "completed",
                                               "result": {"by": "b"}}]}),
        (ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": a_id, "outcome": "failed", "error": "by b",
                                               "retryable": False}]}),
    ]


async def test_agent_cannot_start_progress_or_finish_another_agents_assignment(server: RunningServer,
                                                                                agents: Agents) -> None:
    a, b, job_id, a_id, _b_id = await _two_agents(server, agents)
    before = await _assignment(server, job_id, a_id)
    assert before["status"] == "delivered"
    for event, data in _foreign_reports(a_id):
        ack = await b.call(event, data)
        assert ack["ok"] is True, ack  # acknowledged (an outbox must drain) but not applied
        if event == ev.ASSIGNMENT_STARTED:
            assert ack["data"]["started"] == []
        if event == ev.ASSIGNMENT_FINISHED:
            assert ack["data"]["recorded"] == []
        assert await _assignment(server, job_id, a_id) == before
    job = await server.ok("GET", f"/api/jobs/{job_id}")
    assert (job["completed_count"], job["failed_count"], job["running_count"]) == (0, 0, 0)
    # A's assignment is still A's to run.
    assert (await a.start([a_id]))["data"]["started"] == [a_id]
    assert (await a.finish([a_id]))["data"]["recorded"] == [a_id]
    assert (await _assignment(server, job_id, a_id))["status"] == "completed"


async def test_agent_cannot_touch_another_agents_assignment_by_polling(server: RunningServer,
                                                                       agents: Agents) -> None:
    a, b, job_id, a_id, b_id = await _two_agents(server, agents)
    before = await _assignment(server, job_id, a_id)
    events = [{"event": e, "data": d} for e, d in _foreign_reports(a_id)]
    status, answer = await server.request("POST", "/api/agent/events", token=b.token, json={"events": events})
    assert status == 200, answer
    assert all(r["ok"] for r in answer["results"]), answer
    assert await _assignment(server, job_id, a_id) == before
    # B's poll lists B's work only.
    status, poll = await server.request("GET", "/api/agent/assignments", token=b.token)
    assert status == 200, poll
    assert [o["assignment_id"] for o in poll["assignments"]] == [b_id]
    assert a.orders.keys() == {a_id}


async def test_agent_cannot_pause_another_agents_phone(server: RunningServer, agents: Agents) -> None:
    a, b, job_id, a_id, _b_id = await _two_agents(server, agents)
    before = await server.ok("GET", "/api/devices")
    for event in (ev.AGENT_PAUSE, ev.AGENT_RESUME):
        ack = await b.call(event, {"scope": "device", "serial": a.serials[0]})
        assert ack["ok"] is False, ack
        assert_error({"error": ack["error"]}, "not_found")
    assert await server.ok("GET", "/api/devices") == before
    assert (await _assignment(server, job_id, a_id))["status"] == "delivered"


async def test_agent_pausing_a_job_pauses_only_its_own_part(server: RunningServer, agents: Agents) -> None:
    _a, b, job_id, a_id, b_id = await _two_agents(server, agents)
    before = await _assignment(server, job_id, a_id)
    ack = await b.call(ev.AGENT_PAUSE, {"scope": "job", "job_id": job_id})
    assert ack["ok"] is True, ack
    assert ack["data"]["handed_back"] == [b_id]
    assert await _assignment(server, job_id, a_id) == before


async def test_agent_reporting_another_agents_serial_does_not_take_that_phone(server: RunningServer,
                                                                               agents: Agents) -> None:
    a, b, job_id, a_id, _b_id = await _two_agents(server, agents)
    [a_phone] = [d for d in await server.ok("GET", "/api/devices") if d["agent_name"] == "pc-a"]
    ack = await b.call(ev.DEVICE_UPDATE, {"devices": [{"serial": a.serials[0], "online": False}]})
    assert ack["ok"] is True, ack
    assert [d for d in await server.ok("GET", "/api/devices") if d["id"] == a_phone["id"]] == [a_phone]
    assert (await _assignment(server, job_id, a_id))["status"] == "delivered"


# ---------------------------------------------------------------------------- sockets


async def _connect(server: RunningServer, namespace: str, auth: Any) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    try:
        await client.connect(server.url, namespaces=[namespace], auth=auth, transports=["websocket"],
                             wait_timeout=5)
    except BaseException:
        await client.disconnect()
        raise
    return client


@pytest.mark.parametrize("auth", [
    None, {}, {"token": None}, {"token": ""}, {"token": 5}, {"token": ["x"]}, {"token": "pfagt_not-a-real-token"},
    {"token": "x" * 5000}, {"token": ADMIN}, {"password": ADMIN},
], ids=["none", "empty", "null", "blank", "int", "list", "unknown-agent", "huge", "admin", "wrong-key"])
async def test_agent_socket_without_a_valid_agent_token_is_refused(server: RunningServer, auth: Any) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        await _connect(server, ev.AGENT_NAMESPACE, auth)
    assert await server.ok("GET", "/api/agents") == []


@pytest.mark.parametrize("auth", [
    None, {}, {"token": ""}, {"token": 5}, {"token": "pfadm_not-a-real-token"}, {"token": "agent"},
], ids=["none", "empty", "blank", "int", "unknown-admin", "agent-token"])
async def test_dashboard_socket_without_an_admin_token_is_refused(server: RunningServer, agents: Agents,
                                                                   auth: Any) -> None:
    agent = await agents("pc1", 1)
    if auth == {"token": "agent"}:
        auth = {"token": agent.token}
    with pytest.raises(socketio.exceptions.ConnectionError):
        await _connect(server, ev.DASHBOARD_NAMESPACE, auth)
    assert server.services.realtime.dashboards == set()


async def test_dashboard_socket_with_an_admin_token_connects(server: RunningServer) -> None:
    client = await _connect(server, ev.DASHBOARD_NAMESPACE, {"token": ADMIN})
    try:
        assert len(server.services.realtime.dashboards) == 1
    finally:
        await client.disconnect()
    await eventually(lambda: _no_dashboards(server))


async def _no_dashboards(server: RunningServer) -> bool:
    return not server.services.realtime.dashboards


async def test_agent_socket_with_its_token_acts_as_that_agent_only(server: RunningServer, agents: Agents) -> None:
    a = await agents("pc-a", 1)
    b = await agents("pc-b", 1)
    assert a.agent_id is not None and b.agent_id is not None and a.agent_id != b.agent_id
    devices = await server.ok("GET", "/api/devices")
    assert sorted((d["serial"], d["agent_name"]) for d in devices) == [("pc-a-000", "pc-a"), ("pc-b-000", "pc-b")]


async def test_agent_emitting_disconnect_stays_authenticated(server: RunningServer, agents: Agents) -> None:
    agent = await agents("pc1", 1)
    for name in ("disconnect", "connect"):
        ack = await agent.call(name, {"token": ADMIN}, timeout=5)
        assert ack["ok"] is False, ack
        assert_error({"error": ack["error"]}, "validation_error")
    assert server.services.realtime.has_agent(agent.agent_id or -1)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: any(o["job_id"] == job["id"] for o in agent.orders.values()))
    assert (await agent.call(ev.AGENT_HEARTBEAT, {}))["ok"] is True


async def test_dashboard_emitting_events_gets_an_error_ack_and_stays_connected(server: RunningServer) -> None:
    client = await _connect(server, ev.DASHBOARD_NAMESPACE, {"token": ADMIN})
    try:
        for name in ("disconnect", "connect", "job:create", ev.ASSIGNMENT_FINISHED):
            ack = await client.call(name, {"token": ADMIN}, namespace=ev.DASHBOARD_NAMESPACE, timeout=5)
            assert isinstance(ack, dict) and ack["ok"] is False, (name, ack)
            assert_error({"error": ack["error"]}, "unknown_event")
        assert len(server.services.realtime.dashboards) == 1
    finally:
        await client.disconnect()


async def test_dashboard_heartbeat_is_acked_at_once(server: RunningServer) -> None:
    """``dashboard:ping``: the page's heartbeat (about once a second) is answered ok, and counts as no unknown event."""
    client = await _connect(server, ev.DASHBOARD_NAMESPACE, {"token": ADMIN})
    try:
        for _ in range(3):
            ack = await client.call(ev.DASHBOARD_PING, {}, namespace=ev.DASHBOARD_NAMESPACE, timeout=5)
            assert ack == {"ok": True}
        assert len(server.services.realtime.dashboards) == 1
    finally:
        await client.disconnect()
