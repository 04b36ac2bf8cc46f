"""The audit trail: every change by a token, an agent or the CLI leaves exactly one record with who, what and
the fields that changed; a refused change leaves none; the table refuses edits in the database itself; and
``GET /api/audit`` filters and pages it."""

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from phonefleet.client import PhonefleetClient
from phonefleet.server import tokens
from phonefleet.sim.screen_viewer import ScreenViewer
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job


async def trail(server: RunningServer, **filters: Any) -> list[dict[str, Any]]:
    """Every event matching ``filters``, newest first."""
    query = "&".join(f"{k}={v}" for k, v in {"limit": 500, **filters}.items())
    page = await server.ok("GET", f"/api/audit?{query}")
    items: list[dict[str, Any]] = page["items"]
    return items


async def only(server: RunningServer, action: str, object_id: object) -> dict[str, Any]:
    """The one event of ``action`` on this object (fails when there are none or several)."""
    found = await trail(server, action=action, object_id=object_id)
    assert len(found) == 1, found
    return found[0]


def waiting_job(**overrides: Any) -> dict[str, Any]:
    """A job that stays open: it wants more phones than the fleet has."""
    return open_url_job(target_type="device_count", target_value=3, **overrides)


async def test_job_changes_each_leave_one_record_with_the_token_and_the_fields_that_changed(
        server: RunningServer) -> None:
    job = await server.ok("POST", "/api/jobs", waiting_job(title="nightly smoke", priority=2))
    job_id = job["id"]
    await server.ok("PATCH", f"/api/jobs/{job_id}", {"status": "paused"})
    await server.ok("PATCH", f"/api/jobs/{job_id}", {"status": "active"})
    await server.ok("PATCH", f"/api/jobs/{job_id}", {"priority": 7, "title": "nightly smoke"})  # title unchanged
    await server.ok("POST", f"/api/jobs/{job_id}/requeue", {"scope": "all"}, expect=200)
    await server.ok("POST", "/api/jobs/batch", {"action": "cancel", "ids": [job_id]}, expect=200)
    await server.ok("DELETE", f"/api/jobs/{job_id}", expect=204)

    events = await trail(server, object_kind="job", object_id=job_id)
    assert [e["action"] for e in reversed(events)] == [
        "job.create", "job.pause", "job.resume", "job.update", "job.requeue", "job.cancel", "job.delete"]
    for e in events:
        assert e["actor"] == {"kind": "token", "id": None, "name": "env"}, e
        assert e["via"] == "rest" and e["address"] == "127.0.0.1" and e["team_id"] == 1, "the job's team"
    by_action = {e["action"]: e for e in events}
    created = by_action["job.create"]
    assert created["before"] is None
    assert created["after"]["title"] == "nightly smoke" and created["after"]["priority"] == 2
    assert (by_action["job.pause"]["before"], by_action["job.pause"]["after"]) == (
        {"status": "active"}, {"status": "paused"})
    assert (by_action["job.resume"]["before"], by_action["job.resume"]["after"]) == (
        {"status": "paused"}, {"status": "active"})
    assert (by_action["job.update"]["before"], by_action["job.update"]["after"]) == (
        {"priority": 2}, {"priority": 7}), "only the field that changed"
    assert by_action["job.cancel"]["after"] == {"status": "cancelled"}
    assert by_action["job.delete"]["before"]["status"] == "cancelled" and by_action["job.delete"]["after"] is None


async def test_a_named_token_is_the_actor_of_what_it_changes(server: RunningServer) -> None:
    made = await server.ok("POST", "/api/admins", {"name": "alice"})
    alice = made["token"]
    job_id = (await server.ok("POST", "/api/jobs", waiting_job()))["id"]
    status, _ = await server.request("PATCH", f"/api/jobs/{job_id}", token=alice, json={"status": "paused"})
    assert status == 200
    created = await trail(server, action="admin_token.create")
    assert len(created) == 1 and created[0]["actor"]["name"] == "env" and created[0]["after"] == {"name": "alice"}
    token_id = created[0]["object_id"]
    paused = await only(server, "job.pause", job_id)
    assert paused["actor"] == {"kind": "token", "id": token_id, "name": "alice"}
    await server.ok("DELETE", "/api/admins/alice", expect=204)
    revoked = await only(server, "admin_token.revoke", token_id)
    assert revoked["before"] == {"name": "alice"} and revoked["after"] is None


async def test_refused_changes_record_nothing(server: RunningServer) -> None:
    job_id = (await server.ok("POST", "/api/jobs", waiting_job()))["id"]
    await server.ok("POST", "/api/agents", {"name": "rack-1"}, expect=201)
    before = await trail(server)
    refused = [
        ("PATCH", f"/api/jobs/{job_id}", {"priority": "high"}, 422),
        ("PATCH", f"/api/jobs/{job_id}", {"status": "active"}, 409),  # not paused
        ("PATCH", f"/api/jobs/{job_id}", {"depends_on": [999_999]}, 409),  # active: dependencies are fixed
        ("DELETE", "/api/jobs/999999", None, 404),
        ("POST", "/api/jobs", {**waiting_job(), "target_type": "percentage", "target_value": 500}, 422),
        ("POST", "/api/agents", {"name": "rack-1"}, 409),
        ("PATCH", "/api/devices/999999", {"paused": True}, 404),
        ("POST", "/api/devices/999999/release", None, 404),
        ("PATCH", "/api/fleet/policy", {"thresholds": {"min_battery": 500}}, 422),
        ("POST", "/api/schedules", {"name": "x", "cron": "not a cron", "template": waiting_job()}, 422),
        ("DELETE", "/api/schedules/999999", None, 404),
        ("POST", "/api/admins", {"name": "env"}, 409),
        ("DELETE", "/api/admins/nobody", None, 404),
    ]
    for method, path, body, status in refused:
        got, answer = await server.request(method, path, json=body)
        assert got == status, (method, path, got, answer)
    assert await trail(server) == before


async def test_fleet_changes_are_recorded(server: RunningServer) -> None:
    sim = await server.sim_agent("rack-1", 2)
    devices = await server.ok("GET", "/api/devices")
    device_id = devices[0]["id"]
    agent_id = sim.agent_id
    assert agent_id is not None

    await server.ok("PATCH", f"/api/devices/{device_id}", {"paused": True})
    await server.ok("PATCH", f"/api/devices/{device_id}", {"paused": True})  # already paused: no change
    await server.ok("PATCH", f"/api/devices/{device_id}", {"paused": False})
    await server.ok("POST", f"/api/devices/{device_id}/quarantine", {"reason": "cracked screen"}, expect=200)
    await server.ok("POST", f"/api/devices/{device_id}/release", expect=200)
    await server.ok("POST", f"/api/devices/{device_id}/recover", {"rung": "reconnect"}, expect=202)
    await server.ok("POST", f"/api/devices/{device_id}/control", expect=200)
    await server.ok("DELETE", f"/api/devices/{device_id}/control", expect=200)
    await server.ok("PATCH", "/api/fleet/policy", {"thresholds": {"min_battery": 35}}, expect=200)
    await server.ok("POST", "/api/scheduler/stop", expect=200)
    await server.ok("POST", "/api/scheduler/stop", expect=200)  # stopped already: no change
    await server.ok("POST", "/api/scheduler/start", expect=200)
    await server.ok("PATCH", f"/api/agents/{agent_id}", {"max_running": 1})
    await server.ok("POST", f"/api/agents/{agent_id}/token", expect=201)
    await server.ok("DELETE", f"/api/agents/{agent_id}/token", expect=204)

    on_device = [e["action"] for e in reversed(await trail(server, object_kind="device", object_id=device_id))]
    assert on_device == ["device.pause", "device.resume", "device.quarantine", "device.release", "device.recover",
                         "device.control.take", "device.control.release"]
    paused = await only(server, "device.pause", device_id)
    assert paused["before"]["paused_by"] is None and paused["after"]["paused_by"] == "server"
    assert (await only(server, "device.quarantine", device_id))["after"] == {"quarantine_reason": "cracked screen"}
    released = await only(server, "device.release", device_id)
    assert released["before"]["state"] == "quarantined" and released["after"]["quarantine_reason"] is None
    assert (await only(server, "device.recover", device_id))["after"]["recovering"] == "reconnect"
    assert (await only(server, "device.control.take", device_id))["after"]["controlled_by"]
    assert (await only(server, "device.control.release", device_id))["after"]["controlled_by"] is None

    policy = await trail(server, action="fleet.policy.update")
    assert len(policy) == 1 and policy[0]["after"] == {"thresholds.min_battery": 35}
    assert policy[0]["object_id"] is None
    switch = [(e["action"], e["before"], e["after"]) for e in reversed(await trail(server, object_kind="scheduler"))]
    assert switch == [("scheduler.stop", {"running": True}, {"running": False}),
                      ("scheduler.start", {"running": False}, {"running": True})]
    on_agent = [e["action"] for e in reversed(await trail(server, object_kind="agent", object_id=agent_id))]
    assert on_agent == ["agent.create", "agent.update", "agent.token.rotate", "agent.token.revoke"]
    made = await only(server, "agent.create", agent_id)
    assert made["actor"]["kind"] == "system", "the test's fixture made it on the database, outside any request"
    assert (await only(server, "agent.update", agent_id))["after"] == {"max_running": 1}


async def test_schedule_changes_are_recorded(server: RunningServer) -> None:
    schedule = await server.ok("POST", "/api/schedules", {"name": "nightly", "cron": "0 2 * * *",
                                                            "template": waiting_job()})
    schedule_id = schedule["id"]
    await server.ok("PATCH", f"/api/schedules/{schedule_id}", {"enabled": False, "name": "nightly"})
    job = await server.ok("POST", f"/api/schedules/{schedule_id}/run")
    await server.ok("DELETE", f"/api/schedules/{schedule_id}", expect=204)
    events = list(reversed(await trail(server, object_kind="schedule", object_id=schedule_id)))
    assert [e["action"] for e in events] == ["schedule.create", "schedule.update", "schedule.run",
                                             "schedule.delete"]
    assert events[0]["after"]["cron"] == "0 2 * * *"
    assert (events[1]["before"], events[1]["after"]) == ({"enabled": True}, {"enabled": False})
    assert events[2]["after"] == {"job_id": job["id"]}
    assert events[3]["before"]["name"] == "nightly" and events[3]["after"] is None
    assert {e["team_id"] for e in events} == {1}, "each event carries the schedule's team, its deletion too"


async def test_an_operator_pause_at_the_pc_is_recorded_as_the_agent(server: RunningServer) -> None:
    sim = await server.sim_agent("rack-2", 2)
    job_id = (await server.ok("POST", "/api/jobs", waiting_job()))["id"]
    assert (await sim.pause("device", serial="rack-2-000"))["ok"]
    assert (await sim.pause("device", serial="rack-2-000", resume=True))["ok"]
    assert (await sim.pause("job", job_id=job_id))["ok"]
    assert (await sim.pause("agent"))["ok"]

    agent = {"kind": "agent", "id": str(sim.agent_id), "name": "rack-2"}
    mine = list(reversed(await trail(server, actor_kind="agent")))
    assert [(e["action"], e["object_kind"]) for e in mine] == [
        ("device.pause", "device"), ("device.resume", "device"), ("job.pause_on_agent", "job"),
        ("agent.pause", "agent")]
    assert all(e["actor"] == agent and e["via"] == "socket" for e in mine), mine
    assert mine[0]["after"]["paused_by"] == "agent" and mine[0]["before"]["paused_by"] is None
    assert mine[2]["object_id"] == str(job_id) and mine[2]["after"] == {"paused_on": "rack-2"}
    assert mine[3]["after"]["paused"] is True


async def test_the_trail_refuses_updates_deletes_and_truncation_in_the_database(server: RunningServer) -> None:
    await server.ok("POST", "/api/scheduler/stop", expect=200)
    async with server.services.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_events") == 1
        for statement in ("UPDATE audit_events SET actor_name = 'someone else'",
                          "DELETE FROM audit_events",
                          "TRUNCATE audit_events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT actor_name FROM audit_events") == "env"


async def test_no_route_edits_or_deletes_the_trail(server: RunningServer) -> None:
    paths = (await server.ok("GET", "/api/openapi.json"))["paths"]
    audit_paths = {p: sorted(ops) for p, ops in paths.items() if "audit" in p}
    assert audit_paths == {"/api/audit": ["get"]}
    for method in ("DELETE", "PATCH", "PUT", "POST"):
        status, _ = await server.request(method, "/api/audit")
        assert status == 405


async def test_the_trail_filters_and_pages(server: RunningServer) -> None:
    started = datetime.now(UTC)
    made = await server.ok("POST", "/api/admins", {"name": "bob"})
    bob = made["token"]
    first = (await server.ok("POST", "/api/jobs", waiting_job()))["id"]
    second = (await server.ok("POST", "/api/jobs", waiting_job()))["id"]
    for job_id in (first, second):
        status, _ = await server.request("PATCH", f"/api/jobs/{job_id}", token=bob, json={"status": "paused"})
        assert status == 200
    await server.ok("POST", "/api/scheduler/stop", expect=200)

    assert [e["object_id"] for e in await trail(server, actor="bob")] == [str(second), str(first)]
    assert {e["actor"]["name"] for e in await trail(server, actor_kind="token")} == {"env", "bob"}
    assert await trail(server, actor_kind="person") == []
    assert [e["action"] for e in await trail(server, object_kind="job", object_id=first)] == [
        "job.pause", "job.create"]
    assert len(await trail(server, action="job.create")) == 2
    in_default = await trail(server, team_id=1)  # a job's events carry its team; the switch's has none
    assert [e["action"] for e in in_default] == ["job.pause", "job.pause", "job.create", "job.create"]
    assert await trail(server, team_id=2) == []
    everything = await trail(server)
    assert len(everything) == 6
    assert len(await trail(server, since=started.isoformat().replace("+", "%2B"))) == 6
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+", "%2B")
    assert await trail(server, since=later) == []
    assert len(await trail(server, until=later)) == 6

    pages: list[int] = []
    before: int | None = None
    while True:
        page = await server.ok("GET", "/api/audit?limit=4" + (f"&before={before}" if before else ""))
        pages.append(len(page["items"]))
        if page["next_before"] is None:
            break
        before = page["next_before"]
    assert pages == [4, 2]

    for bad in ("actor_kind=robot", "limit=0", "before=abc", "since=yesterday",
                f"since={later}&until={started.isoformat().replace('+', '%2B')}"):
        status, body = await server.request("GET", f"/api/audit?{bad}")
        assert status == 422, (bad, body)
        assert body["error"]["details"], body


async def test_a_cli_change_is_recorded_with_the_cli_as_actor(server: RunningServer, dsn: str) -> None:
    env = {**os.environ, "DATABASE_URL": dsn, "PHONEFLEET_ADMIN_TOKEN": ADMIN}

    def cli(*args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run([sys.executable, "-m", "phonefleet.server.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    done = await asyncio.to_thread(cli, "agents", "add", "rack-cli")
    assert done.returncode == 0, done.stderr
    refused = await asyncio.to_thread(cli, "agents", "add", "rack-cli")
    assert refused.returncode != 0
    made = await eventually(lambda: trail(server, actor_kind="cli"))
    assert len(made) == 1, made
    assert made[0]["action"] == "agent.create" and made[0]["after"] == {"name": "rack-cli"}
    assert made[0]["via"] == "cli" and "@" in made[0]["actor"]["name"] and made[0]["address"] is None


async def test_the_client_reads_the_trail_as_typed_events(server: RunningServer) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    job_id = (await server.ok("POST", "/api/jobs", waiting_job()))["id"]
    await server.ok("PATCH", f"/api/jobs/{job_id}", {"status": "paused"})
    async with PhonefleetClient(server.url, ADMIN, timeout=10) as client:
        page = await client.audit(object_kind="job", object_id=job_id, since=started, limit=1)
        assert [e.action for e in page.items] == ["job.pause"] and page.next_before == page.items[0].id
        older = await client.audit(object_kind="job", object_id=job_id, before=page.next_before)
    assert [e.action for e in older.items] == ["job.create"] and older.next_before is None
    assert older.items[0].actor.kind == "token" and older.items[0].at >= started


async def test_a_batch_records_each_job_it_changed_and_none_it_could_not(server: RunningServer) -> None:
    ids = [(await server.ok("POST", "/api/jobs", waiting_job()))["id"] for _ in range(2)]
    result = await server.ok("POST", "/api/jobs/batch", {"action": "pause", "ids": [*ids, 999_999]}, expect=200)
    assert result["changed"] == ids and [f["id"] for f in result["failed"]] == [999_999]
    assert sorted(int(e["object_id"]) for e in await trail(server, action="job.pause")) == ids


async def test_a_control_session_over_the_socket_is_recorded_in_its_holders_name(server: RunningServer) -> None:
    await server.sim_agent("rack-3", 1)
    device_id = (await server.ok("GET", "/api/devices"))[0]["id"]
    carol = (await server.ok("POST", "/api/admins", {"name": "carol"}))["token"]
    viewer = ScreenViewer(server.url, carol)
    await viewer.connect()
    try:
        assert (await viewer.control(device_id, take=True))["ok"]
        await viewer.input(device_id, {"type": "keyevent", "key": "HOME"})  # done or not, a tap is no record
    finally:
        await viewer.disconnect()  # its session ends with its page
    ended = await eventually(lambda: trail(server, action="device.control.release"))
    took = await only(server, "device.control.take", device_id)
    for e in (took, ended[0]):
        assert e["actor"]["name"] == "carol" and e["via"] == "socket", e
    assert ended[0]["before"] == {"controlled_by": took["after"]["controlled_by"]}
    assert len(await trail(server, object_kind="device")) == 2, "a session, not every tap"


async def test_a_change_on_a_bare_connection_is_recorded_too(server: RunningServer, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)  # no jsonb codec, as a script or a test may open one
    try:
        await tokens.add_agent(conn, "rack-bare")
    finally:
        await conn.close()
    [made] = await trail(server, action="agent.create")
    assert made["after"] == {"name": "rack-bare"} and made["actor"]["kind"] == "system"
