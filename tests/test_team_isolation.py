"""Teams on REST: a person of team A never sees team B's jobs, phones, agents, schedules, assignments, artifacts,
events or figures, and every attempt to read or touch one answers the very 404 a missing one does; a job of A
never reaches B's phones; an admin sees both. Real agents with virtual phones, one per team (each on its own adb
server, so neither sees the other's phones)."""

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import adbutils
import pytest

from phonefleet.server.api import ROUTES
from phonefleet.server.routes import Route
from phonefleet.server.store.owners import TEAM_KINDS
from tests.agent_fixtures import AgentFactory
from tests.conftest import ADMIN, RunningServer, eventually, free_port, open_url_job
from tests.team_fixtures import Member, add_member, add_team, move_agent

MISSING = 999_999_999


@pytest.fixture(scope="module")
def adb_server_b() -> Iterator[int]:
    """A second private adb server, for team B's agent."""
    adb, port = str(adbutils.adb_path()), free_port()
    env = {**os.environ, "ADB_LIBUSB": "0", "ADB_EMU": "0"}
    subprocess.run([adb, "-P", str(port), "start-server"], check=True, capture_output=True, timeout=60, env=env)
    yield port
    subprocess.run([adb, "-P", str(port), "kill-server"], check=False, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Side:
    """One team and what it owns."""

    team: int
    viewer: Member
    operator: Member
    agent: int
    phones: dict[int, str]
    """id -> serial"""
    job: int
    """Ran on the team's phones, one screenshot each."""
    waiting: int
    """Scheduled for tomorrow: something to pause, edit and delete."""
    assignment: int
    artifact: str
    schedule: int


def _job(title: str, **overrides: Any) -> dict[str, Any]:
    return open_url_job(title=title, plan=[{"type": "open_url", "url": "https://example.com/", "duration_sec": 0},
                                           {"type": "screenshot"}], **overrides)


async def _side(server: RunningServer, agent_factory: AgentFactory, name: str, adb_port: int | None) -> Side:
    team = await add_team(server, f"team-{name}")
    await agent_factory(f"pc-{name}", virtual=2, **({"adb_port": adb_port} if adb_port else {}))
    agent = await move_agent(server, f"pc-{name}", team)
    viewer = await add_member(server, f"viewer-{name}", "viewer", [team])
    operator = await add_member(server, f"operator-{name}", "operator", [team])
    phones = {d["id"]: d["serial"] for d in await server.ok("GET", "/api/devices") if d["agent_id"] == agent}
    status, job = await server.request("POST", "/api/jobs", token=operator.token, json=_job(f"job of {name}"))
    assert status == 201 and job["team_id"] == team, job

    async def finished() -> list[dict[str, Any]] | None:
        done = await server.ok("GET", f"/api/jobs/{job['id']}")
        if done["status"] != "completed":
            return None
        items: list[dict[str, Any]] = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
        return items

    runs = await eventually(finished, timeout=60)
    assert runs is not None
    assert {r["device_id"] for r in runs} == set(phones), runs

    async def stored() -> str | None:
        files = await server.ok("GET", f"/api/assignments/{runs[0]['id']}/artifacts")
        return next((f["name"] for f in files if f["status"] == "stored"), None)

    artifact = await eventually(stored, timeout=30)
    assert artifact is not None
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    status, waiting = await server.request("POST", "/api/jobs", token=operator.token,
                                           json=_job(f"waiting of {name}", run_at=tomorrow))
    assert status == 201 and waiting["status"] == "scheduled", waiting
    status, schedule = await server.request("POST", "/api/schedules", token=operator.token, json={
        "name": f"schedule of {name}", "template": _job(f"fired for {name}"), "interval_sec": 86_400})
    assert status == 201 and schedule["team_id"] == team, schedule
    return Side(team=team, viewer=viewer, operator=operator, agent=agent, phones=phones, job=job["id"],
                waiting=waiting["id"], assignment=runs[0]["id"], artifact=artifact, schedule=schedule["id"])


@pytest.fixture
async def sides(server: RunningServer, agent_factory: AgentFactory, adb_server_b: int) -> tuple[Side, Side]:
    return await _side(server, agent_factory, "a", None), await _side(server, agent_factory, "b", adb_server_b)


def _object_id(route: Route, side: Side) -> int:
    return {"job": side.waiting, "assignment": side.assignment, "device": next(iter(side.phones)),
            "agent": side.agent, "schedule": side.schedule, "team": side.team}[str(route.owns)]


BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/jobs/{id}"): {"status": "paused"},
    ("POST", "/api/jobs/{id}/requeue"): {"scope": "all"},
    ("PATCH", "/api/devices/{id}"): {"paused": True},
    ("POST", "/api/devices/{id}/quarantine"): {"reason": "peeking"},
    ("POST", "/api/devices/{id}/recover"): {"rung": "reconnect"},
    ("POST", "/api/devices/{id}/input"): {"type": "tap", "x": 1, "y": 1},
    ("PATCH", "/api/schedules/{id}"): {"enabled": False},
    ("PATCH", "/api/agents/{id}"): {"max_running": 1},
}
"""Valid bodies, so a refusal cannot be a 422 in disguise."""


async def test_a_person_never_touches_another_teams_objects_and_learns_nothing(
        server: RunningServer, sides: tuple[Side, Side]) -> None:
    a, b = sides
    touched = 0
    for route in ROUTES:
        if route.owns not in TEAM_KINDS or route.access not in ("viewer", "operator"):
            continue
        for who in (a.viewer, a.operator) if route.access == "viewer" else (a.operator,):
            answers = []
            for object_id in (_object_id(route, b), MISSING):
                path = route.path.replace("{id}", str(object_id)).replace("{name}", b.artifact)
                status, body = await server.request(route.method, path, token=who.token,
                                                    json=BODIES.get((route.method, route.path)))
                assert status == 404, (who.role, route.method, path, status, body)
                answers.append(body)
            seen, missing = answers
            assert seen == {"error": {"code": "not_found", "message": f"{route.owns} {_object_id(route, b)} not "
                                      "found", "details": []}}, (route.method, route.path, seen)
            assert str(seen).replace(str(_object_id(route, b)), str(MISSING)) == str(missing)
            touched += 1
    assert touched > 25
    # B's things are as they were
    job = await server.ok("GET", f"/api/jobs/{b.waiting}")
    assert job["status"] == "scheduled"
    assert (await server.ok("GET", f"/api/schedules/{b.schedule}"))["enabled"] is True
    for device in await server.ok("GET", "/api/devices"):
        if device["id"] in b.phones:
            assert device["paused_by"] is None and device["state"] == "idle", device
    # and they are B's operator's to touch
    status, _ = await server.request("PATCH", f"/api/jobs/{b.waiting}", token=b.operator.token,
                                     json={"status": "paused"})
    assert status == 200


async def _get(server: RunningServer, path: str, who: Member) -> Any:
    status, body = await server.request("GET", path, token=who.token)
    assert status == 200, (path, status, body)
    return body


async def test_lists_and_figures_hold_only_ones_own_team(server: RunningServer, sides: tuple[Side, Side]) -> None:
    a, b = sides
    for who in (a.viewer, a.operator):
        jobs = await _get(server, "/api/jobs?limit=500", who)
        assert {j["id"] for j in jobs["items"]} == {a.job, a.waiting} and jobs["total"] == 2
        assert (await _get(server, "/api/jobs?search=of%20b", who))["total"] == 0
        runs = await _get(server, "/api/assignments?limit=1000", who)
        assert {r["job_id"] for r in runs["items"]} == {a.job} and runs["total"] == len(a.phones)
        assert (await _get(server, f"/api/assignments?device_id={next(iter(b.phones))}", who))["total"] == 0
        assert {d["id"] for d in await _get(server, "/api/devices", who)} == set(a.phones)
        assert [g["id"] for g in await _get(server, "/api/agents", who)] == [a.agent]
        schedules = await _get(server, "/api/schedules", who)
        assert [s["id"] for s in schedules["items"]] == [a.schedule] and schedules["total"] == 1
        stats = await _get(server, "/api/stats", who)
        assert sum(stats["jobs"].values()) == 2 and sum(stats["devices"].values()) == len(a.phones)
        assert sum(stats["assignments"].values()) == len(a.phones) and stats["connected_devices"] == len(a.phones)
        assert sum(stats["agents"][k] for k in ("online", "paused", "offline")) == 1
        assert stats["run_time"]["count"] == len(a.phones)
        health = await _get(server, "/api/fleet/health", who)
        assert sum(health["devices"].values()) == len(a.phones)
        scheduler = await _get(server, "/api/scheduler", who)
        assert sum(scheduler["jobs"].values()) == 2 and scheduler["idle_devices"] == len(a.phones)
        assert scheduler["next_schedule"]["id"] == a.schedule
        trail = (await _get(server, "/api/audit?limit=500", who))["items"]
        assert trail and {e["team_id"] for e in trail} == {a.team}
        assert (await _get(server, f"/api/audit?team_id={b.team}", who))["items"] == []
        assert (await _get(server, f"/api/audit?team_id={a.team}", who))["items"] == trail
    everything = await server.ok("GET", "/api/jobs?limit=500")
    assert {a.job, a.waiting, b.job, b.waiting} <= {j["id"] for j in everything["items"]}
    assert {d["id"] for d in await server.ok("GET", "/api/devices")} == set(a.phones) | set(b.phones)
    assert {e["team_id"] for e in (await server.ok("GET", "/api/audit?limit=500"))["items"]} >= {a.team, b.team}
    for side in (a, b):
        async with server.session.get(f"{server.url}/api/assignments/{side.assignment}/artifacts/{side.artifact}",
                                      headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")


async def test_what_a_body_names_stays_within_the_callers_team(server: RunningServer,
                                                               sides: tuple[Side, Side]) -> None:
    a, b = sides
    op = a.operator.token
    status, body = await server.request("POST", "/api/jobs", token=op, json=_job("x", depends_on=[b.job]))
    assert status == 422 and body["error"]["details"][0]["field"] == "depends_on", body
    status, body = await server.request("POST", "/api/jobs", token=op, json=_job("x", team_id=b.team))
    assert status == 422 and body["error"]["details"][0]["field"] == "team_id", body
    status, body = await server.request("PATCH", f"/api/jobs/{a.waiting}", token=op, json={"depends_on": [b.job]})
    assert status == 422 and body["error"]["details"][0]["field"] == "depends_on", body

    status, result = await server.request("POST", "/api/jobs/batch", token=op,
                                          json={"action": "pause", "ids": [a.waiting, b.waiting, MISSING]})
    assert status == 200 and result["changed"] == [a.waiting], result
    hidden, missing = result["failed"]
    assert hidden == {"id": b.waiting, "code": "not_found", "message": f"job {b.waiting} not found"}
    assert missing == {"id": MISSING, "code": "not_found", "message": f"job {MISSING} not found"}
    status, result = await server.request("POST", "/api/jobs/batch", token=op,
                                          json={"action": "cancel", "filter": {"search": "waiting of"}})
    assert status == 200 and result == {"action": "cancel", "changed": [a.waiting], "failed": []}, result
    assert (await server.ok("GET", f"/api/jobs/{b.waiting}"))["status"] == "scheduled"

    # A job of A naming B's phones reaches none of them, though they are idle: the same job in B takes one.
    serials = sorted(b.phones.values())
    status, reaching = await server.request("POST", "/api/jobs", token=op, json=_job(
        "reaching", target_type="device_count", target_value=1, priority=10, filters={"serials": serials}))
    assert status == 201, reaching
    status, theirs = await server.request("POST", "/api/jobs", token=b.operator.token, json=_job(
        "theirs", target_type="device_count", target_value=1, filters={"serials": serials}))
    assert status == 201, theirs

    async def ran_theirs() -> bool:
        return bool((await server.ok("GET", f"/api/jobs/{theirs['id']}"))["status"] == "completed")

    await eventually(ran_theirs, timeout=60)
    assert (await server.ok("GET", f"/api/jobs/{reaching['id']}/assignments"))["items"] == []
    assert (await server.ok("GET", f"/api/jobs/{reaching['id']}"))["status"] == "active"
