"""Bad input, over REST and over the agent socket: always a 4xx (or an error ack), never a 500, and
never a change. Every error body has the contract's shape ``{"error": {"code", "message", "details"}}``."""

import json
from collections.abc import Callable
from typing import Any

import pytest

from phonefleet.protocol import events as ev
from phonefleet.sim.agent import SimAgent
from tests.conftest import Agents, RunningServer, eventually, open_url_job

DataFn = Callable[[int], Any]





# ---------------------------------------------------------------------------- helpers


def assert_error(body: Any, code: str | None = None) -> dict[str, Any]:
    """The contract's error shape; returns the inner ``error``."""
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert {"code", "message", "details"} <= set(error), body
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["details"], list), body
    for detail in error["details"]:
        assert isinstance(detail, dict) and isinstance(detail.get("message"), str), body
    if code is not None:
        assert error["code"] == code, body
    return error


def error_fields(error: dict[str, Any]) -> list[str]:
    return [d["field"] for d in error["details"] if d.get("field")]


def assert_names_field(error: dict[str, Any], field: str) -> None:
    """Some detail names ``field`` (or a path inside it, e.g. ``plan.0.open_url.url``)."""
    fields = error_fields(error)
    assert any(f == field or f.startswith(field + ".") for f in fields), (field, error)


async def rejected(server: RunningServer, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                   status: int = 422, code: str | None = "validation_error") -> dict[str, Any]:
    got, body = await server.request(method, path, json=json, data=data)
    assert got == status, (got, body)
    return assert_error(body, code)


async def job_total(server: RunningServer) -> int:
    body = await server.ok("GET", "/api/jobs")
    total: int = body["total"]
    return total


def job_body(**overrides: Any) -> dict[str, Any]:
    return open_url_job(**overrides)


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


# ---------------------------------------------------------------------------- job bodies


@pytest.mark.parametrize("value", [0, 101, -1, 1000, None], ids=["0", "101", "-1", "1000", "missing"])
async def test_percentage_outside_1_to_100_is_rejected_naming_the_field(server: RunningServer, value: Any) -> None:
    body = job_body(target_type="percentage", target_value=value)
    if value is None:
        body = without(body, "target_value")
    error = await rejected(server, "POST", "/api/jobs", json=body)
    assert_names_field(error, "target_value")
    assert await job_total(server) == 0


@pytest.mark.parametrize("value", [1, 50, 100])
async def test_percentage_within_1_to_100_is_accepted(server: RunningServer, value: int) -> None:
    job = await server.ok("POST", "/api/jobs", job_body(target_type="percentage", target_value=value))
    assert job["target_value"] == value


@pytest.mark.parametrize("value", [0, -5, None], ids=["0", "-5", "missing"])
async def test_device_count_below_1_is_rejected_naming_the_field(server: RunningServer, value: Any) -> None:
    body = job_body(target_type="device_count", target_value=value)
    if value is None:
        body = without(body, "target_value")
    error = await rejected(server, "POST", "/api/jobs", json=body)
    assert_names_field(error, "target_value")
    assert await job_total(server) == 0


@pytest.mark.parametrize("step", [
    {"type": "teleport", "url": "https://example.com"},
    {"type": "", "url": "https://example.com"},
    {"type": None},
    {"type": 7},
    {"type": {"nested": ["garbage", {"x": None}]}},
    {"url": "https://example.com"},
], ids=["teleport", "empty", "null", "int", "nested", "no-type"])
async def test_unknown_step_type_is_rejected_naming_the_plan_step(server: RunningServer, step: Any) -> None:
    error = await rejected(server, "POST", "/api/jobs", json=job_body(plan=[step]))
    assert_names_field(error, "plan.0")
    assert await job_total(server) == 0


@pytest.mark.parametrize(("step", "field"), [
    ({"type": "open_url", "duration_sec": 60}, "url"),
    ({"type": "wait"}, "duration_sec"),
    ({"type": "tap", "x": 10}, "y"),
    ({"type": "launch_app"}, "package"),
    ({"type": "install_apk"}, "url"),
    ({"type": "shell"}, "command"),
], ids=["open_url-url", "wait-duration", "tap-y", "launch_app-package", "install_apk-url", "shell-command"])
async def test_step_missing_a_required_field_is_rejected_naming_it(server: RunningServer, step: dict[str, Any],
                                                                   field: str) -> None:
    plan = [{"type": "screenshot"}, step]
    error = await rejected(server, "POST", "/api/jobs", json=job_body(plan=plan))
    fields = error_fields(error)
    assert any(f.startswith("plan.1.") and f.endswith("." + field) for f in fields), error
    assert await job_total(server) == 0


@pytest.mark.parametrize(("extra", "field"), [
    ({"colour": "red"}, "colour"),
    ({"target": "all_devices"}, "target"),
    ({"filters": {"model": ["Pixel 7"]}}, "filters.model"),
    ({"plan": [{"type": "open_url", "url": "https://example.com", "duration": 60}]}, "plan.0.open_url.duration"),
], ids=["top-level", "typo-of-target_type", "filters", "step"])
async def test_unknown_field_is_rejected_naming_it(server: RunningServer, extra: dict[str, Any], field: str) -> None:
    error = await rejected(server, "POST", "/api/jobs", json=job_body(**extra))
    assert_names_field(error, field)
    assert await job_total(server) == 0


@pytest.mark.parametrize(("overrides", "field"), [
    ({"title": 123}, "title"),
    ({"title": ["a"]}, "title"),
    ({"title": ""}, "title"),
    ({"plan": "open_url"}, "plan"),
    ({"plan": {"type": "open_url"}}, "plan"),
    ({"plan": []}, "plan"),
    ({"plan": ["open_url"]}, "plan.0"),
    ({"target_type": "some"}, "target_type"),
    ({"target_type": 1}, "target_type"),
    ({"target_type": "percentage", "target_value": "fifty"}, "target_value"),
    ({"target_type": "percentage", "target_value": 50.5}, "target_value"),
    ({"priority": "high"}, "priority"),
    ({"priority": 1.5}, "priority"),
    ({"priority": [1]}, "priority"),
    ({"priority": True}, "priority"),
    ({"priority": "5"}, "priority"),
    ({"target_type": "device_count", "target_value": True}, "target_value"),
    ({"target_type": "device_count", "target_value": "5"}, "target_value"),
    ({"target_type": "device_count", "target_value": 5.0}, "target_value"),
    ({"timeout_sec": "60"}, "timeout_sec"),
    ({"filters": ["x"]}, "filters"),
    ({"filters": {"tags": "a"}}, "filters.tags"),
    ({"timeout_sec": {}}, "timeout_sec"),
    ({"timeout_sec": 0}, "timeout_sec"),
    ({"max_retries": -1}, "max_retries"),
    ({"run_at": "yesterday"}, "run_at"),
    ({"run_at": 1.5e300}, "run_at"),
    ({"depends_on": "1"}, "depends_on"),
    ({"depends_on": ["x"]}, "depends_on.0"),
    ({"depends_on": [0]}, "depends_on.0"),
    ({"plan": [{"type": "open_url", "url": "https://example.com", "duration_sec": "long"}]}, "plan.0"),
    ({"plan": [{"type": "open_url", "url": "not a url"}]}, "plan.0"),
    ({"plan": [{"type": "tap", "x": -1, "y": 0}]}, "plan.0"),
], ids=lambda v: str(v)[:40])
async def test_wrong_types_are_rejected_naming_the_field(server: RunningServer, overrides: dict[str, Any],
                                                         field: str) -> None:
    error = await rejected(server, "POST", "/api/jobs", json=job_body(**overrides))
    assert_names_field(error, field)
    assert await job_total(server) == 0


@pytest.mark.parametrize(("key"), ["title", "plan", "target_type"])
async def test_missing_required_field_is_rejected_naming_it(server: RunningServer, key: str) -> None:
    error = await rejected(server, "POST", "/api/jobs", json=without(job_body(), key))
    assert_names_field(error, key)


async def test_depends_on_an_unknown_job_is_rejected_naming_depends_on(server: RunningServer) -> None:
    first = await server.ok("POST", "/api/jobs", job_body())
    error = await rejected(server, "POST", "/api/jobs", json=job_body(depends_on=[first["id"], 987654]))
    assert_names_field(error, "depends_on")
    assert "987654" in error["message"] or any("987654" in d["message"] for d in error["details"]), error
    assert await job_total(server) == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"status": "exploded"}, "status"),
    ({"status": "completed"}, "status"),
    ({"status": None, "colour": 1}, "colour"),
    ({"status": 1}, "status"),
    ({"priority": "urgent"}, "priority"),
    ({"priority": 10**30}, "priority"),
    ({"priority": True}, "priority"),
    ({"title": None}, "title"),
    ({"priority": None, "status": "paused"}, "priority"),
    ({"title": ""}, "title"),
    ({"plan": []}, "plan"),
], ids=lambda v: str(v)[:40])
async def test_invalid_job_patch_is_rejected_naming_the_field_and_changes_nothing(
        server: RunningServer, body: dict[str, Any], field: str) -> None:
    job = await server.ok("POST", "/api/jobs", job_body(target_type="device_count", target_value=3))
    error = await rejected(server, "PATCH", f"/api/jobs/{job['id']}", json=body)
    assert_names_field(error, field)
    after = await server.ok("GET", f"/api/jobs/{job['id']}")
    assert after == job


@pytest.mark.parametrize(("body", "field"), [
    ({"paused": "maybe"}, "paused"),
    ({"paused": "yes"}, "paused"),
    ({"paused": 1}, "paused"),
    ({"paused": None}, "paused"),
    ({}, "paused"),
    ({"paused": True, "state": "idle"}, "state"),
], ids=lambda v: str(v)[:40])
async def test_invalid_device_patch_is_rejected_naming_the_field_and_changes_nothing(
        server: RunningServer, agents: Agents, body: dict[str, Any], field: str) -> None:
    agent = await agents("pc1", 1)
    [device] = await server.ok("GET", "/api/devices")
    error = await rejected(server, "PATCH", f"/api/devices/{device['id']}", json=body)
    assert_names_field(error, field)
    assert await server.ok("GET", "/api/devices") == [device]
    assert agent.events(ev.DEVICE_PAUSE) == []


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "bad name!"}, "name"),
    ({"name": 5}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "ok", "token": "mine"}, "token"),
], ids=lambda v: str(v)[:40])
async def test_invalid_agent_registration_is_rejected_naming_the_field(
        server: RunningServer, body: dict[str, Any], field: str) -> None:
    error = await rejected(server, "POST", "/api/agents", json=body)
    assert_names_field(error, field)
    assert await server.ok("GET", "/api/agents") == []


BODY_ROUTES = [
    ("POST", "/api/jobs"),
    ("PATCH", "/api/jobs/{job}"),
    ("PATCH", "/api/devices/{device}"),
    ("POST", "/api/agents"),
    ("PATCH", "/api/agents/{agent}"),
    ("POST", "/api/jobs/batch"),
    ("POST", "/api/schedules"),
    ("PATCH", "/api/schedules/{schedule}"),
]
"""Every route that reads a JSON object (requeue's body may be left out: it defaults to failed slots)."""


async def _route_ids(server: RunningServer) -> dict[str, int]:
    """A job and a phone to aim the body-taking routes at."""
    agent = await server.sim_agent("pc1", 1)
    await agent.disconnect()
    [device] = await server.ok("GET", "/api/devices")
    job = await server.ok("POST", "/api/jobs", job_body(target_type="device_count", target_value=5))
    schedule = await server.ok("POST", "/api/schedules", {"name": "hourly", "template": job_body(),
                                                          "interval_sec": 3600})
    return {"job": job["id"], "device": device["id"], "agent": device["agent_id"], "schedule": schedule["id"]}


@pytest.mark.parametrize("raw", [
    b"not json", b"{", b'{"title": }', b"\xff\xfe\x00", b"", b"   ", b'{"title": "x",}', b"{'title': 'x'}",
    b'{"priority": NaN}', b'{"priority": Infinity}', b'{"paused": true} {"paused": false}',
], ids=lambda v: repr(v)[:30])
async def test_non_json_body_is_rejected_naming_the_body(server: RunningServer, raw: bytes) -> None:
    ids = await _route_ids(server)
    before = (await server.ok("GET", "/api/jobs"), await server.ok("GET", "/api/devices"))
    for method, path in BODY_ROUTES:
        error = await rejected(server, method, path.format(**ids), data=raw)
        assert_names_field(error, "body")
    assert (await server.ok("GET", "/api/jobs"), await server.ok("GET", "/api/devices")) == before


@pytest.mark.parametrize("value", [[], [{"title": "x"}], [{"paused": True}], "a string", 5, None, True], ids=repr)
async def test_json_that_is_not_an_object_is_rejected_naming_the_body(server: RunningServer, value: Any) -> None:
    ids = await _route_ids(server)
    before = (await server.ok("GET", "/api/jobs"), await server.ok("GET", "/api/devices"))
    for method, path in BODY_ROUTES:
        error = await rejected(server, method, path.format(**ids), data=json.dumps(value).encode())
        assert_names_field(error, "body")
    assert (await server.ok("GET", "/api/jobs"), await server.ok("GET", "/api/devices")) == before


# ---------------------------------------------------------------------------- query parameters


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"),
    ("limit=501", "limit"),
    ("limit=-1", "limit"),
    ("limit=abc", "limit"),
    ("limit=", "limit"),
    ("limit=1e3", "limit"),
    (f"limit={10**30}", "limit"),
    ("offset=-1", "offset"),
    ("offset=x", "offset"),
    (f"offset={10**30}", "offset"),
    (f"offset={2**63}", "offset"),
    ("status=bogus", "status"),
    ("status=active,bogus", "status"),
    ("status=", "status"),
    ("search=" + "x" * 201, "search"),
], ids=lambda v: str(v)[:30])
async def test_invalid_job_list_query_is_rejected_naming_the_param(server: RunningServer, query: str,
                                                                   field: str) -> None:
    error = await rejected(server, "GET", f"/api/jobs?{query}")
    assert_names_field(error, field)


@pytest.mark.parametrize("query", ["limit=1", "limit=500", "offset=0", "offset=1000000", "status=active",
                                   "status=active,paused&status=completed", "search=%25_%27%22", "unknown=1"])
async def test_valid_job_list_query_is_accepted(server: RunningServer, query: str) -> None:
    await server.ok("POST", "/api/jobs", job_body())
    body = await server.ok("GET", f"/api/jobs?{query}")
    assert isinstance(body["items"], list)


@pytest.mark.parametrize(("path", "field"), [
    ("/api/assignments?status=bogus", "status"),
    ("/api/assignments?limit=0", "limit"),
    (f"/api/assignments?offset={10**30}", "offset"),
    ("/api/assignments?device_id=0", "device_id"),
    ("/api/assignments?device_id=phone", "device_id"),
    ("/api/jobs/{job}/assignments?status=bogus", "status"),
    ("/api/jobs/{job}/assignments?limit=100000", "limit"),
], ids=lambda v: str(v)[:40])
async def test_invalid_assignment_query_is_rejected_naming_the_param(server: RunningServer, path: str,
                                                                     field: str) -> None:
    job = await server.ok("POST", "/api/jobs", job_body())
    error = await rejected(server, "GET", path.format(job=job["id"]))
    assert_names_field(error, field)


# ---------------------------------------------------------------------------- 404


BAD_IDS = ["987654", "0", "-1", "abc", "1.5", "1e3", "%C2%B2", "%EF%BC%91", "%D9%A1", "99999999999999999999999",
           "9223372036854775808", "1%20", "%00", "null"]


@pytest.mark.parametrize(("method", "template", "body"), [
    ("GET", "/api/jobs/{}", None),
    ("GET", "/api/jobs/{}/assignments", None),
    ("PATCH", "/api/jobs/{}", {"status": "paused"}),
    ("DELETE", "/api/jobs/{}", None),
    ("POST", "/api/jobs/{}/requeue", {"scope": "all"}),
    ("PATCH", "/api/devices/{}", {"paused": True}),
    ("PATCH", "/api/agents/{}", {"max_running": 2}),
    ("GET", "/api/schedules/{}", None),
    ("PATCH", "/api/schedules/{}", {"enabled": False}),
    ("DELETE", "/api/schedules/{}", None),
    ("POST", "/api/schedules/{}/run", None),
    ("GET", "/api/schedules/{}/jobs", None),
], ids=["get-job", "job-assignments", "patch-job", "delete-job", "requeue-job", "patch-device", "patch-agent",
        "get-schedule", "patch-schedule", "delete-schedule", "run-schedule", "schedule-jobs"])
async def test_unknown_or_non_numeric_id_is_not_found(server: RunningServer, agents: Agents, method: str,
                                                      template: str, body: Any) -> None:
    # A job and a phone with id 1 exist, so an id that merely *looks* like 1 must not reach them.
    await agents("pc1", 1)
    job = await server.ok("POST", "/api/jobs", job_body(target_type="device_count", target_value=5))
    assert job["id"] == 1
    [device] = await server.ok("GET", "/api/devices")
    assert device["id"] == 1
    schedule = await server.ok("POST", "/api/schedules", {"name": "one", "template": job_body(), "interval_sec": 60})
    assert schedule["id"] == 1
    for bad_id in BAD_IDS:
        error = await rejected(server, method, template.format(bad_id), json=body, status=404, code="not_found")
        assert error["message"], bad_id
    assert await server.ok("GET", "/api/jobs/1") == job
    assert await server.ok("GET", "/api/devices") == [device]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/nope"),
    ("GET", "/nope"),
    ("GET", "/api/jobs/1/explode"),
    ("POST", "/api/jobs/1/assignments/2"),
    ("GET", "/api/"),
    ("GET", "/api/agent"),
    ("DELETE", "/api/devices/1/x"),
])
async def test_unknown_path_is_not_found_with_a_json_error(server: RunningServer, method: str, path: str) -> None:
    await rejected(server, method, path, status=404, code="not_found")


async def test_wrong_method_answers_a_json_error(server: RunningServer) -> None:
    status, body = await server.request("PUT", "/api/jobs", json=job_body())
    assert status == 405, (status, body)
    assert_error(body, "method_not_allowed")
    assert await job_total(server) == 0


# ---------------------------------------------------------------------------- 409


async def test_resuming_a_cancelled_job_conflicts(server: RunningServer) -> None:
    job = await server.ok("POST", "/api/jobs", job_body(target_type="device_count", target_value=2))
    cancelled = await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "cancelled"})
    assert cancelled["status"] == "cancelled"
    for status in ("active", "paused"):
        await rejected(server, "PATCH", f"/api/jobs/{job['id']}", json={"status": status}, status=409,
                       code="conflict")
    assert await server.ok("GET", f"/api/jobs/{job['id']}") == cancelled


async def test_pausing_a_completed_job_conflicts(server: RunningServer) -> None:
    job = await server.ok("POST", "/api/jobs", job_body())  # no phones: nothing to reach, done at once
    assert job["status"] == "completed"
    for status in ("paused", "cancelled", "active"):
        await rejected(server, "PATCH", f"/api/jobs/{job['id']}", json={"status": status}, status=409,
                       code="conflict")
    assert await server.ok("GET", f"/api/jobs/{job['id']}") == job


async def test_conflicting_patch_with_editable_fields_changes_nothing(server: RunningServer) -> None:
    job = await server.ok("POST", "/api/jobs", job_body(target_type="device_count", target_value=2))
    cancelled = await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "cancelled"})
    await rejected(server, "PATCH", f"/api/jobs/{job['id']}",
                   json={"status": "active", "title": "renamed", "priority": 9}, status=409, code="conflict")
    assert await server.ok("GET", f"/api/jobs/{job['id']}") == cancelled


# ---------------------------------------------------------------------------- 413


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/jobs"), ("PATCH", "/api/jobs/1"), ("POST", "/api/agents"),
])
async def test_body_above_1_mib_is_rejected_with_413(server: RunningServer, method: str, path: str) -> None:
    await server.ok("POST", "/api/jobs", job_body(target_type="device_count", target_value=1))
    before = await server.ok("GET", "/api/jobs")
    big = b'{"title": "' + b"a" * (1024 * 1024) + b'"}'
    await rejected(server, method, path, data=big, status=413, code=None)
    assert await server.ok("GET", "/api/jobs") == before


async def test_body_above_1_mib_is_rejected_on_the_agent_route(server: RunningServer, agents: Agents) -> None:
    agent = await agents("pc1", 1)
    big = b'{"events": [{"event": "agent:heartbeat", "data": {"x": "' + b"a" * (1024 * 1024) + b'"}}]}'
    status, body = await server.request("POST", "/api/agent/events", token=agent.token, data=big)
    assert status == 413, (status, body)
    assert_error(body)


# ---------------------------------------------------------------------------- nothing changes, nothing breaks


async def test_rejected_creates_change_nothing(server: RunningServer, agents: Agents) -> None:
    agent = await agents("pc1", 2)
    bad_bodies: list[Any] = [
        job_body(target_type="percentage", target_value=0),
        job_body(target_type="percentage", target_value=101),
        job_body(target_type="device_count", target_value=0),
        job_body(plan=[{"type": "teleport"}]),
        job_body(colour="red"),
        job_body(depends_on=[424242]),
        [job_body()],
    ]
    for body in bad_bodies:
        await rejected(server, "POST", "/api/jobs", json=body)
    assert await job_total(server) == 0
    assert (await server.ok("GET", "/api/stats"))["assignments"].get("pending", 0) == 0
    assert agent.orders == {}
    # The server is still fine: a good create goes through and reaches the phones.
    job = await server.ok("POST", "/api/jobs", job_body())
    await agent.wait_for(lambda: len(agent.orders) == 2)
    assert {o["job_id"] for o in agent.orders.values()} == {job["id"]}


BIG = 10**30
HUGE_ID = 2**64 - 1
"""Beyond a bigint yet a JSON integer on the socket (orjson, shared by the in-process test client,
cannot write 10**30; a real agent's 10**30 reaches the server as the float 1e30, also in the table)."""

NASTY_JOB_BODIES: list[Any] = [
    job_body(priority=BIG),
    job_body(priority=-BIG),
    job_body(target_value=BIG),
    job_body(target_value=-BIG),
    job_body(target_type="device_count", target_value=BIG),
    job_body(target_type="percentage", target_value=BIG),
    job_body(depends_on=[BIG]),
    job_body(depends_on=[-1]),
    job_body(depends_on=[2**63]),
    job_body(depends_on=list(range(1, 102))),
    job_body(timeout_sec=BIG),
    job_body(max_retries=BIG),
    job_body(priority=1e308),
    job_body(plan=[{"type": "tap", "x": BIG, "y": BIG}]),
    job_body(plan=[{"type": "wait", "duration_sec": 1e308}]),
    job_body(plan=[{"type": "open_url", "url": "https://example.com", "duration_sec": -1e308}]),
    job_body(plan=[{"type": "open_url", "url": "https://" + "a" * 5000 + ".com"}]),
    job_body(plan=[{"type": "open_url", "url": "javascript:alert(1)"}]),
    job_body(plan=[{"type": "open_url", "url": "https://example.com", "package": "../../etc"}]),
    job_body(plan=[{"type": "screenshot"}] * 201),
    job_body(plan=[[[[[]]]]]),
    job_body(plan=[{"type": "open_url", "url": {"nested": [{"garbage": [None, 1, "x"]}]}}]),
    job_body(filters={"tags": [{"a": 1}]}),
    job_body(filters={"tags": ["t"] * 51}),
    job_body(filters={"models": None, "agents": [None]}),
    job_body(filters={"serials": [BIG]}),
    job_body(title="\u0000"),
    job_body(title="bad\u0000title", filters={"tags": ["nul\u0000tag"]}),
    job_body(filters={"models": ["\u0000"]}),
    job_body(plan=[{"type": "text", "text": "a\u0000b"}]),
    job_body(plan=[{"type": "run_tests", "runner": "a/b", "args": {"k\u0000": "v"}}]),
    job_body(title="\ud800"),
    job_body(title="\udfff\ud800", plan=[{"type": "text", "text": "\ud83d"}]),
    job_body(title="🚀" * 201),
    job_body(run_at="0001-01-01T00:00:00+14:00"),
    job_body(run_at="9999-12-31T23:59:59-14:00"),
    job_body(run_at="0000-00-00T00:00:00"),
    job_body(run_at=BIG),
    job_body(run_at=-BIG),
    job_body(title=None, plan=None, target_type=None, target_value=None, priority=None, filters=None,
             timeout_sec=None, max_retries=None, depends_on=None),
    {"title": None},
    {"": None},
    {"\u0000": "\u0000"},
    {"title": {"$gt": ""}, "plan": {"$ne": None}},
    {"title": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
    {"title": "x", "plan": [{"type": "screenshot"}], "target_type": "percentage", "target_value": True},
    {"title": "x", "plan": [{"type": "screenshot"}], "target_type": ["percentage"]},
    {"title": "x", "plan": [{"type": "screenshot"}], "target_type": "all_devices", "__class__": {}},
    [],
    [None],
    None,
    "🚀",
    BIG,
]

NASTY_RAW_BODIES: list[bytes] = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"title": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
    b'{"title": "x", "title": "y", "plan": [{"type": "screenshot"}], "target_type": "percentage"}',
    b'{"priority": 1' + b"0" * 5000 + b"}",
    b'{"priority": 1e999999}',
    b'{"priority": -Infinity}',
    b'{"title": "\\ud800"}',
    b'{"title": "\\u0000"}',
    b"\x00\x00\x00",
    "{\"title\": \"caf\u00e9\"}".encode("latin-1"),
    b"\xef\xbb\xbf[]",
]


async def _assert_never_500(server: RunningServer, method: str, path: str, *, json: Any = None,
                            data: bytes | None = None, token: str | None = None) -> None:
    kwargs: dict[str, Any] = {"json": json, "data": data}
    if token is not None:
        kwargs["token"] = token
    status, body = await server.request(method, path, **kwargs)
    assert status < 500, (method, path, repr(json if data is None else data[:80]), status, body)
    assert 400 <= status < 500, (method, path, repr(json if data is None else data[:80]), status, body)
    assert_error(body)


async def test_nasty_bodies_never_yield_a_500(server: RunningServer, agents: Agents) -> None:
    ids = await _route_ids(server)
    before = await server.ok("GET", "/api/jobs")
    for body in NASTY_JOB_BODIES:
        await _assert_never_500(server, "POST", "/api/jobs", json=body)
    for body in NASTY_JOB_BODIES:
        await _assert_never_500(server, "PATCH", f"/api/jobs/{ids['job']}", json=body)
    for raw in NASTY_RAW_BODIES:
        for method, path in BODY_ROUTES:
            await _assert_never_500(server, method, path.format(**ids), data=raw)
    for body in NASTY_JOB_BODIES:  # a schedule's template is a job without run_at and depends_on
        await _assert_never_500(server, "POST", "/api/schedules", json={"name": "n", "template": body,
                                                                        "interval_sec": 60})
    for value in [BIG, -BIG, None, "\u0000", "\ud800", [True], {"a": [None]}, "", " * * * * *"]:
        await _assert_never_500(server, "POST", "/api/schedules", json={"name": "n", "template": job_body(),
                                                                        "cron": value, "timezone": value})
        await _assert_never_500(server, "PATCH", f"/api/schedules/{ids['schedule']}",
                                json={"interval_sec": value, "misfire_policy": value, "enabled": value})
        await _assert_never_500(server, "POST", "/api/jobs/batch", json={"action": value, "ids": [value]})
        if value is not None and value != "":  # null (or "" as a search) is no criterion: a valid batch
            await _assert_never_500(server, "POST", "/api/jobs/batch", json={"action": "pause", "filter": {
                "status": value, "search": value, "schedule_id": value}})
        await _assert_never_500(server, "POST", f"/api/jobs/{ids['job']}/requeue", json={"scope": value})
        if value is not None:  # null removes the agent's limit: a valid patch
            await _assert_never_500(server, "PATCH", f"/api/agents/{ids['agent']}", json={"max_running": value})
        await _assert_never_500(server, "PATCH", f"/api/jobs/{ids['job']}", json={"depends_on": value,
                                                                                 "max_parallel": value})
    for value in [BIG, -BIG, None, "\u0000", "\ud800", [True], {"a": [None]}]:
        await _assert_never_500(server, "PATCH", f"/api/devices/{ids['device']}", json={"paused": value})
        await _assert_never_500(server, "PATCH", f"/api/jobs/{ids['job']}",
                                json={"title": value, "priority": value, "timeout_sec": value})
        await _assert_never_500(server, "POST", "/api/agents", json={"name": value})
    for query in [f"limit={BIG}", f"offset={BIG}", f"offset={-BIG}", "status=%00", "search=%00", "search=%ED%A0%80",
                  "limit=%00", "status=" + ",".join(["active"] * 10_000)[:7000]]:
        status, body = await server.request("GET", f"/api/jobs?{query}")
        assert status < 500, (query, status, body)
        if status >= 400:
            assert_error(body)
    # Nothing changed: same jobs, and the server still works.
    assert await server.ok("GET", "/api/jobs") == before
    [device] = await server.ok("GET", "/api/devices")
    assert device["paused_by"] is None
    await server.ok("PATCH", f"/api/jobs/{ids['job']}", {"status": "cancelled"})  # leave the new phone free
    agent = await agents("pc2", 1)
    job = await server.ok("POST", "/api/jobs", job_body(title="still works 🚀 ünïcödé"))
    assert job["title"] == "still works 🚀 ünïcödé"
    await agent.wait_for(lambda: any(o["job_id"] == job["id"] for o in agent.orders.values()))


# ---------------------------------------------------------------------------- agent events


async def _fleet(server: RunningServer, agents: Agents) -> tuple[SimAgent, dict[str, Any], list[int]]:
    """One agent with two phones, each holding a delivered assignment of one job."""
    agent = await agents("pc1", 2)
    job = await server.ok("POST", "/api/jobs", job_body())
    await agent.wait_for(lambda: len(agent.orders) == 2)

    async def delivered() -> bool:
        body = await server.ok("GET", f"/api/jobs/{job['id']}/assignments")
        return len(body["items"]) == 2 and all(a["status"] == "delivered" for a in body["items"])

    await eventually(delivered)
    return agent, job, sorted(agent.orders)


async def _state(server: RunningServer, job_id: int) -> Any:
    """What an agent event could change, without timestamps that move on their own."""
    job = await server.ok("GET", f"/api/jobs/{job_id}")
    assignments = await server.ok("GET", f"/api/jobs/{job_id}/assignments")
    devices = await server.ok("GET", "/api/devices")
    agents = await server.ok("GET", "/api/agents")
    jobs = await server.ok("GET", "/api/jobs")
    return (
        {k: job[k] for k in ("status", "target_count", "assigned_count", "completed_count", "failed_count",
                             "running_count", "paused_count")},
        sorted((a["id"], a["status"], a["progress"], a["step_index"], a["error"], a["result"])
               for a in assignments["items"]),
        sorted((d["serial"], d["state"], d["paused_by"], d["battery"], d["model"]) for d in devices),
        sorted((a["name"], a["status"], a["paused"]) for a in agents),
        jobs["total"],
    )


def _finished(outcome: Any = "completed", **item: Any) -> DataFn:
    return lambda aid: {"results": [{"assignment_id": aid, "outcome": outcome, **item}]}


BAD_EVENTS: list[tuple[str, str, DataFn, str, str | None]] = [
    # (case id, event, data from a live assignment id, expected error code, expected field)
    ("unknown-event", "agent:explode", lambda aid: {"assignment_id": aid}, "validation_error", "event"),
    ("empty-event-name", "", lambda aid: {}, "validation_error", "event"),
    ("client-sent-disconnect", "disconnect", lambda aid: {}, "validation_error", "event"),
    ("client-sent-connect", "connect", lambda aid: {"token": "x"}, "validation_error", "event"),
    ("payload-string", ev.ASSIGNMENT_FINISHED, lambda aid: "finished", "validation_error", None),
    ("payload-list", ev.ASSIGNMENT_FINISHED, lambda aid: [{"assignment_id": aid, "outcome": "completed"}],
     "validation_error", None),
    ("payload-number", ev.AGENT_PAUSE, lambda aid: 5, "validation_error", None),
    ("empty-results", ev.ASSIGNMENT_FINISHED, lambda aid: {"results": []}, "validation_error", "results"),
    ("no-results", ev.ASSIGNMENT_FINISHED, lambda aid: {}, "validation_error", "results"),
    ("unknown-outcome", ev.ASSIGNMENT_FINISHED, _finished("exploded"), "validation_error", "results.0.outcome"),
    ("id-numeric-string", ev.ASSIGNMENT_FINISHED, lambda aid: {"results": [
        {"assignment_id": str(aid), "outcome": "completed"}]}, "validation_error", "results.0.assignment_id"),
    ("id-word", ev.ASSIGNMENT_FINISHED, lambda aid: {"results": [
        {"assignment_id": "abc", "outcome": "completed"}]}, "validation_error", "results.0.assignment_id"),
    ("id-float", ev.ASSIGNMENT_FINISHED, lambda aid: {"results": [
        {"assignment_id": float(aid), "outcome": "completed"}]}, "validation_error", "results.0.assignment_id"),
    ("id-bool", ev.ASSIGNMENT_FINISHED, lambda aid: {"results": [
        {"assignment_id": True, "outcome": "completed"}]}, "validation_error", "results.0.assignment_id"),
    ("id-huge", ev.ASSIGNMENT_FINISHED, lambda aid: {"results": [
        {"assignment_id": HUGE_ID, "outcome": "completed"}]}, "validation_error", "results.0.assignment_id"),
    ("id-huge-float", ev.ASSIGNMENT_FINISHED, lambda aid: {"results": [
        {"assignment_id": 1e30, "outcome": "completed"}]}, "validation_error", "results.0.assignment_id"),
    ("id-negative", ev.ASSIGNMENT_FINISHED, lambda aid: {"results": [
        {"assignment_id": -aid, "outcome": "completed"}]}, "validation_error", "results.0.assignment_id"),
    ("unknown-item-field", ev.ASSIGNMENT_FINISHED, _finished(colour="red"), "validation_error", "results.0.colour"),
    ("unknown-top-field", ev.ASSIGNMENT_FINISHED,
     lambda aid: {"results": [{"assignment_id": aid, "outcome": "completed"}], "extra": 1},
     "validation_error", "extra"),
    ("nul-in-error", ev.ASSIGNMENT_FINISHED, _finished("failed", error="bad\u0000"), "validation_error",
     "results.0.error"),
    ("nul-in-result", ev.ASSIGNMENT_FINISHED, _finished(result={"k": "v\u0000"}), "validation_error",
     "results.0.result"),
    ("date-out-of-range", ev.ASSIGNMENT_FINISHED, _finished(finished_at="0001-01-01T00:00:00+14:00"),
     "validation_error", "results.0.finished_at"),
    ("date-garbage", ev.ASSIGNMENT_FINISHED, _finished(started_at="yesterday"), "validation_error",
     "results.0.started_at"),
    ("started-empty", ev.ASSIGNMENT_STARTED, lambda aid: {"items": []}, "validation_error", "items"),
    ("started-id-huge", ev.ASSIGNMENT_STARTED, lambda aid: {"items": [{"assignment_id": HUGE_ID}]},
     "validation_error", "items.0.assignment_id"),
    ("started-id-string", ev.ASSIGNMENT_STARTED, lambda aid: {"items": [{"assignment_id": str(aid)}]},
     "validation_error", "items.0.assignment_id"),
    ("progress-above-1", ev.ASSIGNMENT_PROGRESS, lambda aid: {"items": [
        {"assignment_id": aid, "step_index": 0, "step_count": 1, "progress": 1.5}]},
     "validation_error", "items.0.progress"),
    ("pause-device-without-serial", ev.AGENT_PAUSE, lambda aid: {"scope": "device"}, "validation_error", "serial"),
    ("pause-device-empty-serial", ev.AGENT_PAUSE, lambda aid: {"scope": "device", "serial": ""},
     "validation_error", "serial"),
    ("pause-device-unknown-serial", ev.AGENT_PAUSE, lambda aid: {"scope": "device", "serial": "nope"},
     "not_found", None),
    ("pause-job-unknown", ev.AGENT_PAUSE, lambda aid: {"scope": "job", "job_id": 987654}, "not_found", None),
    ("pause-job-without-id", ev.AGENT_PAUSE, lambda aid: {"scope": "job"}, "validation_error", "job_id"),
    ("pause-job-id-huge", ev.AGENT_PAUSE, lambda aid: {"scope": "job", "job_id": HUGE_ID}, "validation_error",
     "job_id"),
    ("pause-unknown-scope", ev.AGENT_PAUSE, lambda aid: {"scope": "galaxy"}, "validation_error", "scope"),
    ("resume-job-unknown", ev.AGENT_RESUME, lambda aid: {"scope": "job", "job_id": 987654}, "not_found", None),
    ("device-update-empty-serial", ev.DEVICE_UPDATE, lambda aid: {"devices": [{"serial": ""}]},
     "validation_error", "devices.0.serial"),
    ("device-update-battery-101", ev.DEVICE_UPDATE, lambda aid: {"devices": [{"serial": "pc1-000", "battery": 101}]},
     "validation_error", "devices.0.battery"),
    ("device-update-duplicate-serials", ev.DEVICE_UPDATE, lambda aid: {"devices": [
        {"serial": "pc1-000", "online": False}, {"serial": "pc1-000"}]}, "validation_error", "devices"),
    ("device-update-nul-serial", ev.DEVICE_UPDATE, lambda aid: {"devices": [{"serial": "pc1\u0000"}]},
     "validation_error", "devices.0.serial"),
    ("hello-devices-not-a-list", ev.AGENT_HELLO, lambda aid: {"devices": "all"}, "validation_error", "devices"),
    ("hello-duplicate-serials", ev.AGENT_HELLO, lambda aid: {"devices": [{"serial": "pc1-000"},
                                                                         {"serial": "pc1-000"}]},
     "validation_error", "devices"),
    ("heartbeat-ids-garbage", ev.AGENT_HEARTBEAT, lambda aid: {"running": [{"nested": [None]}]},
     "validation_error", "running.0"),
]


@pytest.mark.parametrize("case", BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
async def test_malformed_agent_event_gets_the_same_error_ack_by_socket_and_polling_and_changes_nothing(
        server: RunningServer, agents: Agents, case: tuple[str, str, DataFn, str, str | None]) -> None:
    _name, event, data_fn, code, field = case
    agent, job, ids = await _fleet(server, agents)
    before = await _state(server, job["id"])
    socket_ack = await agent.call(event, data_fn(ids[0]), timeout=5)
    assert socket_ack.get("ok") is False, socket_ack
    error = assert_error({"error": socket_ack.get("error")}, code)
    if field is not None:
        assert_names_field(error, field)
    assert await _state(server, job["id"]) == before
    # The polling fallback answers the very same ack, inside a 200 batch answer.
    status, body = await server.request("POST", "/api/agent/events", token=agent.token,
                                        json={"events": [{"event": event, "data": data_fn(ids[0])}]})
    assert status == 200, (status, body)
    assert body == {"results": [socket_ack]}
    assert await _state(server, job["id"]) == before


async def test_agent_keeps_working_after_every_malformed_event(server: RunningServer, agents: Agents) -> None:
    agent, job, ids = await _fleet(server, agents)
    for case, event, data_fn, code, _field in BAD_EVENTS:
        ack = await agent.call(event, data_fn(ids[0]), timeout=5)
        assert ack.get("ok") is False and ack["error"]["code"] == code, (case, ack)
    # The connection and the server survived: normal work goes on, on the same socket.
    assert (await agent.start(ids))["ok"]
    ack = await agent.finish(ids)
    assert ack["ok"], ack
    done = await server.ok("GET", f"/api/jobs/{job['id']}")
    assert (done["status"], done["completed_count"]) == ("completed", 2)
    second = await server.ok("POST", "/api/jobs", job_body(title="second"))
    await agent.wait_for(lambda: sum(o["job_id"] == second["id"] for o in agent.orders.values()) == 2)
    assert (await server.ok("GET", "/healthz"))["status"] == "ok"


async def test_polling_batch_answers_one_ack_per_event_in_order(server: RunningServer, agents: Agents) -> None:
    agent, job, ids = await _fleet(server, agents)
    events = [{"event": event, "data": data_fn(ids[0])} for _case, event, data_fn, _code, _field in BAD_EVENTS]
    events.append({"event": ev.ASSIGNMENT_STARTED, "data": {"items": [{"assignment_id": ids[1]}]}})
    status, body = await server.request("POST", "/api/agent/events", token=agent.token, json={"events": events})
    assert status == 200, (status, body)
    results = body["results"]
    assert len(results) == len(events)
    for (case, _event, _data, code, field), ack in zip(BAD_EVENTS, results, strict=False):
        assert ack["ok"] is False, (case, ack)
        error = assert_error({"error": ack["error"]}, code)
        if field is not None:
            assert_names_field(error, field)
    assert results[-1]["ok"] is True, results[-1]
    assert results[-1]["data"] == {"started": [ids[1]]}
    assignments = await server.ok("GET", f"/api/jobs/{job['id']}/assignments")
    assert {a["id"]: a["status"] for a in assignments["items"]} == {ids[0]: "delivered", ids[1]: "running"}


@pytest.mark.parametrize("body", [
    {},
    {"events": []},
    {"events": "agent:heartbeat"},
    {"events": [{"data": {}}]},
    {"events": [{"event": 5, "data": {}}]},
    {"events": [None]},
    {"events": [{"event": "agent:heartbeat", "data": {}}] * 1001},
    {"events": [{"event": "agent:heartbeat", "data": {}}], "extra": True},
    [{"event": "agent:heartbeat", "data": {}}],
    None,
], ids=lambda v: str(v)[:40])
async def test_bad_event_batch_body_is_rejected(server: RunningServer, agents: Agents, body: Any) -> None:
    agent, job, _ids = await _fleet(server, agents)
    before = await _state(server, job["id"])
    status, answer = await server.request("POST", "/api/agent/events", token=agent.token,
                                          data=json.dumps(body).encode())
    assert status == 422, (status, answer)
    assert_error(answer, "validation_error")
    assert await _state(server, job["id"]) == before


@pytest.mark.parametrize("raw", [b"not json", b"", b"[", b'{"events": NaN}', b"[" * 100_000 + b"]" * 100_000])
async def test_non_json_event_batch_is_rejected(server: RunningServer, agents: Agents, raw: bytes) -> None:
    agent = await agents("pc1", 1)
    status, body = await server.request("POST", "/api/agent/events", token=agent.token, data=raw)
    assert status == 422, (status, body)
    assert_names_field(assert_error(body, "validation_error"), "body")
