"""The live ``/dashboard`` socket is team-scoped (issue 15): a person of team A never hears of a job, assignment,
progress, phone, agent, pause, schedule, fleet figure or screen of team B while B's work runs to completion, and
hears all of A's; an admin hears both. Real server; team A's agent is a real one with a virtual phone on the real
adb server (its screen streams), team B's a protocol-level one (``SimAgent``: two agents on one adb server would
share their phones); teams made with SQL (``socket_team_fixtures``)."""

import contextlib
import json
from typing import Any

import aiohttp
import asyncpg

from phonefleet.protocol import events as ev
from phonefleet.protocol import health
from phonefleet.protocol import screen as sc
from phonefleet.server import tokens
from phonefleet.sim.agent import SimAgent
from tests.agent_fixtures import AgentFactory
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job
from tests.socket_team_fixtures import Listener, add_team, move_agent, person_token, set_teams

pytest_plugins = ["tests.agent_fixtures"]

B_AGENT = "rack-of-b"
B_TITLE = "work-of-b"


def ids_in(event: str, data: Any) -> dict[str, set[int]]:
    """The ids of jobs, phones, agents and schedules an event names (every event a dashboard hears is here: a new
    one fails the tests until it is)."""
    got: dict[str, set[int]] = {"job": set(), "device": set(), "agent": set(), "schedule": set()}
    if event in (ev.JOB_STATUS_UPDATE, ev.JOB_PROGRESS, ev.JOB_DELETED):
        got["job"].add(data["job_id"])
    elif event == ev.DASHBOARD_DEVICE_UPDATE:
        got["device"].update(d["id"] for d in data["devices"])
        got["agent"].update(d["agent_id"] for d in data["devices"])
    elif event == health.DEVICE_EVENT:
        got["device"].add(data["device_id"])
    elif event == ev.AGENT_UPDATE:
        got["agent"].add(data["agent_id"])
    elif event == ev.PAUSE_CHANGED:
        for kind in ("job", "device", "agent"):
            if data.get(f"{kind}_id") is not None:
                got[kind].add(data[f"{kind}_id"])
    elif event == ev.SCHEDULE_CHANGED:
        got["schedule"].add(data["schedule_id"])
    elif event == sc.SCREEN_SESSION:
        got["device"].add(data["device_id"])
    elif event == sc.SCREEN_FRAME:
        got["device"].add(data[0]["device_id"])
    elif event not in (ev.FLEET_STATS, ev.SCHEDULER_UPDATE):
        raise AssertionError(f"an event this test does not know: {event}")
    return got


def named(listener: Listener) -> dict[str, set[int]]:
    total: dict[str, set[int]] = {"job": set(), "device": set(), "agent": set(), "schedule": set()}
    for event, data in listener.events:
        for kind, ids in ids_in(event, data).items():
            total[kind] |= ids
    return total


def phones_counted(listener: Listener) -> set[int]:
    """The fleet sizes the ``fleet:stats`` heard gave."""
    return {sum(s["devices"].values()) for s in listener.of(ev.FLEET_STATS)}


async def test_a_team_hears_only_of_its_own_work_phones_and_screens_and_admins_hear_all(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    pool = server.services.pool
    async with pool.acquire() as conn:
        team_a, team_b = await add_team(conn, "team-a"), await add_team(conn, "team-b")
    alice = await person_token(server.url, server.session, "alice", "operator")
    async with pool.acquire() as conn:
        await set_teams(conn, "alice", [team_a])
    token_a, token_b = await server.add_agent("rack-of-a"), await server.add_agent(B_AGENT)
    async with pool.acquire() as conn:
        agent_a, agent_b = await move_agent(conn, "rack-of-a", team_a), await move_agent(conn, B_AGENT, team_b)

    heard_a = await Listener(server.url, alice).connect()
    heard_all = await Listener(server.url, ADMIN).connect()
    try:
        await agent_factory("rack-of-a", virtual=1, token=token_a)
        rack_b = SimAgent(server.url, token_b, ["phone-of-b"], auto_finish=True)
        server.clients.append(rack_b)
        await rack_b.connect()
        devices = await server.ok("GET", "/api/devices")
        phone_a = next(d["id"] for d in devices if d["agent_id"] == agent_a)
        phone_b = next(d["id"] for d in devices if d["agent_id"] == agent_b)

        # Another team's phone on the screen events: the very answer of a phone that does not exist.
        unknown = 10**9
        asks: list[tuple[str, dict[str, Any]]] = [
            (sc.SCREEN_WATCH, {"max_width": 320}), (sc.SCREEN_CONTROL, {"take": True}),
            (sc.SCREEN_INPUT, {"input": {"type": "tap", "x": 1, "y": 1}})]
        for event, body in asks:
            theirs, none = [await heard_a.call(event, {"device_id": d, **body}) for d in (phone_b, unknown)]
            assert theirs["ok"] is False and theirs["error"]["code"] == none["error"]["code"] == "not_found", theirs
            assert theirs["error"]["message"] == none["error"]["message"].replace(str(unknown), str(phone_b))
        assert (await heard_a.call(sc.SCREEN_UNWATCH, {"device_id": phone_b}))["ok"]
        watched = await heard_a.call(sc.SCREEN_WATCH, {"device_id": phone_a, "max_width": 320})
        assert watched["ok"], watched
        assert (await heard_all.call(sc.SCREEN_WATCH, {"device_id": phone_b, "max_width": 320}))["ok"]
        assert (await heard_all.call(sc.SCREEN_WATCH, {"device_id": phone_a, "max_width": 320}))["ok"]

        job_a = (await server.ok("POST", "/api/jobs", open_url_job(title="work-of-a", team_id=team_a)))["id"]
        job_b = (await server.ok("POST", "/api/jobs", open_url_job(title=B_TITLE, team_id=team_b)))["id"]

        async def completed() -> bool:
            statuses = [(await server.ok("GET", f"/api/jobs/{j}"))["status"] for j in (job_a, job_b)]
            return statuses == ["completed", "completed"]

        await eventually(completed, timeout=60, interval=0.2)
        schedule_b = (await server.ok("POST", "/api/schedules", {
            "name": "nightly-of-b", "interval_sec": 86_400, "enabled": False, "team_id": team_b,
            "template": {"title": B_TITLE, "plan": [{"type": "open_url", "url": "https://example.com"}],
                         "target_type": "all_devices"}}))["id"]
        await server.ok("PATCH", f"/api/devices/{phone_b}", {"paused": True})
        await server.ok("PATCH", f"/api/devices/{phone_b}", {"paused": False})
        await server.ok("DELETE", f"/api/jobs/{job_b}", expect=204)
        # Last, something of A's: once Alice heard it, she heard everything sent before it.
        await server.ok("PATCH", f"/api/devices/{phone_a}", {"paused": True})
        await server.ok("PATCH", f"/api/devices/{phone_a}", {"paused": False})

        def resumed(listener: Listener, phone: int) -> bool:
            return any(p["device_id"] == phone and not p["paused"] for p in listener.of(ev.PAUSE_CHANGED))

        await heard_all.wait_for(lambda: resumed(heard_all, phone_a) and resumed(heard_all, phone_b)
                                 and any(d["job_id"] == job_b for d in heard_all.of(ev.JOB_DELETED)))
        await heard_a.wait_for(lambda: resumed(heard_a, phone_a))
        await eventually(lambda: _now(len(heard_a.of(sc.SCREEN_FRAME)) > 0 and len(heard_all.of(sc.SCREEN_FRAME)) > 0))
    finally:
        await heard_a.close()
        await heard_all.close()

    mine, every = named(heard_a), named(heard_all)
    assert job_b not in mine["job"] and phone_b not in mine["device"] and agent_b not in mine["agent"], mine
    assert schedule_b not in mine["schedule"], mine
    assert not any(B_AGENT in json.dumps(d, default=str) or B_TITLE in json.dumps(d, default=str)
                   for _, d in heard_a.events)
    assert phones_counted(heard_a) == {1}, "Alice's header counts her team's one phone"
    # Alice heard all of A's: its job running to completion, its phone, its agent, its pause, its screen.
    assert mine == {"job": {job_a}, "device": {phone_a}, "agent": {agent_a}, "schedule": set()}, mine
    assert any(u["job_id"] == job_a and u["status"] == "completed" for u in heard_a.of(ev.JOB_STATUS_UPDATE))
    assert any(u["job_id"] == job_a and u["completed_count"] == 1 for u in heard_a.of(ev.JOB_PROGRESS)
               + heard_a.of(ev.JOB_STATUS_UPDATE))
    # The admin heard both teams.
    assert {job_a, job_b} <= every["job"] and {phone_a, phone_b} <= every["device"], every
    assert {agent_a, agent_b} <= every["agent"] and schedule_b in every["schedule"], every
    assert 2 in phones_counted(heard_all), "the admins' header counts the whole fleet"


async def test_an_agent_moved_to_another_team_takes_its_phones_events_along(server: RunningServer) -> None:
    """Rooms are chosen from the team when an event goes out: after a move, the old team hears nothing more of
    the agent's phones and the new one hears them."""
    pool = server.services.pool
    async with pool.acquire() as conn:
        team_a, team_b = await add_team(conn, "team-a"), await add_team(conn, "team-b")
    alice, bob = [await person_token(server.url, server.session, n, "viewer") for n in ("alice", "bob")]
    async with pool.acquire() as conn:
        await set_teams(conn, "alice", [team_a])
        await set_teams(conn, "bob", [team_b])
        _, token = await tokens.add_agent(conn, "mover")
        await move_agent(conn, "mover", team_a)
    heard_a, heard_b = await Listener(server.url, alice).connect(), await Listener(server.url, bob).connect()
    agent = SimAgent(server.url, token, ["mover-1"])
    server.clients.append(agent)
    try:
        await agent.connect()
        await heard_a.wait_for(lambda: bool(heard_a.of(ev.FLEET_STATS)))  # the last of the first flush
        async with pool.acquire() as conn:
            await move_agent(conn, "mover", team_b)
        before = len(heard_a.events)
        await agent.report(agent.devices(battery=42))
        await heard_b.wait_for(lambda: any(d["battery"] == 42 for u in heard_b.of(ev.DASHBOARD_DEVICE_UPDATE)
                                           for d in u["devices"]))
        # A later flush reached Bob: the one of 42 is over, whoever it was sent to.
        await agent.report(agent.devices(battery=41))
        await heard_b.wait_for(lambda: any(d["battery"] == 41 for u in heard_b.of(ev.DASHBOARD_DEVICE_UPDATE)
                                           for d in u["devices"]))
        await everyone_told(server, heard_a)
    finally:
        await heard_a.close()
        await heard_b.close()
    after = heard_a.events[before:]
    assert [e for e, _ in after if e != ev.FLEET_STATS] == [ev.SCHEDULER_UPDATE], after
    assert all(sum(d["devices"].values()) == 0 for e, d in after if e == ev.FLEET_STATS), "A's own header: none left"
    assert not any(d.get("battery") in (41, 42) for u in heard_a.of(ev.DASHBOARD_DEVICE_UPDATE) for d in u["devices"])


async def test_a_person_added_to_a_team_hears_it_without_reconnecting(server_factory: Any) -> None:
    server: RunningServer = await server_factory(token_recheck_sec=0.3)
    pool = server.services.pool
    async with pool.acquire() as conn:
        team_b = await add_team(conn, "team-b")
    alice = await person_token(server.url, server.session, "alice", "viewer")
    async with pool.acquire() as conn:
        _, token = await tokens.add_agent(conn, "rack")
        await move_agent(conn, "rack", team_b)
    heard = await Listener(server.url, alice).connect()
    heard_all = await Listener(server.url, ADMIN).connect()
    agent = SimAgent(server.url, token, ["rack-1"])
    server.clients.append(agent)
    try:
        await agent.connect()
        async with pool.acquire() as conn:
            await set_teams(conn, "alice", [team_b])

        async def heard_battery() -> bool:
            await agent.report(agent.devices(battery=33))
            return any(d["battery"] == 33 for u in heard.of(ev.DASHBOARD_DEVICE_UPDATE) for d in u["devices"])

        await eventually(heard_battery, timeout=20, interval=0.5)
        async with pool.acquire() as conn:
            await set_teams(conn, "alice", [])
        await eventually(lambda: _now(all(p.team_ids == frozenset() for _, p in
                                          server.services.realtime.dashboard_sessions())))
        before = len(heard.events)
        await agent.report(agent.devices(battery=34))
        await agent.report(agent.devices(battery=35))  # heard by the admin: the flush of 34 is over
        await heard_all.wait_for(lambda: any(d["battery"] == 35 for u in heard_all.of(ev.DASHBOARD_DEVICE_UPDATE)
                                             for d in u["devices"]))
        await everyone_told(server, heard)
    finally:
        await heard.close()
        await heard_all.close()
    assert [e for e, _ in heard.events[before:]] == [ev.SCHEDULER_UPDATE], heard.events[before:]


async def everyone_told(server: RunningServer, listener: Listener) -> None:
    """Stop distribution, an event for every dashboard: once ``listener`` heard it, it heard all sent before (one
    socket's packets keep their order)."""
    told = len(listener.of(ev.SCHEDULER_UPDATE))
    await server.ok("POST", "/api/scheduler/stop", expect=200)
    await listener.wait_for(lambda: len(listener.of(ev.SCHEDULER_UPDATE)) > told)


async def _now(value: bool) -> bool:
    return value



async def test_another_nodes_changes_reach_only_their_teams_dashboards(two_nodes: list[str], dsn: str) -> None:
    """Both teams' agents on node 1, the dashboards on node 0: what node 1 relays over the bus is sent to each
    team's room there too."""
    here, there = two_nodes
    conn = await asyncpg.connect(dsn)
    racks: list[SimAgent] = []
    try:
        team_a, team_b = await add_team(conn, "team-a"), await add_team(conn, "team-b")
        async with aiohttp.ClientSession() as session:
            alice = await person_token(here, session, "alice", "viewer")
        await set_teams(conn, "alice", [team_a])
        agent_ids: dict[int, int] = {}
        for team, name in ((team_a, "rack-of-a"), (team_b, B_AGENT)):
            _, token = await tokens.add_agent(conn, name)
            agent_ids[team] = await move_agent(conn, name, team)
            racks.append(SimAgent(there, token, [f"{name}-1"], auto_finish=True))
        heard_a, heard_all = await Listener(here, alice).connect(), await Listener(here, ADMIN).connect()
        try:
            for rack in racks:
                await rack.connect()
            jobs: dict[int, int] = {}
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as session:
                for team, title in ((team_a, "work-of-a"), (team_b, B_TITLE)):
                    async with session.post(there + "/api/jobs", json=open_url_job(title=title, team_id=team)) as r:
                        assert r.status == 201, await r.text()
                        jobs[team] = (await r.json())["id"]

                def completed(listener: Listener, job_id: int) -> bool:
                    return any(u["job_id"] == job_id and u["status"] == "completed"
                               for u in listener.of(ev.JOB_STATUS_UPDATE))

                await heard_all.wait_for(lambda: completed(heard_all, jobs[team_a])
                                         and completed(heard_all, jobs[team_b]))
                await heard_a.wait_for(lambda: completed(heard_a, jobs[team_a]))
                async with session.post(there + "/api/scheduler/stop") as r:  # last: over the bus like the rest
                    assert r.status == 200
            await heard_a.wait_for(lambda: bool(heard_a.of(ev.SCHEDULER_UPDATE)))
        finally:
            await heard_a.close()
            await heard_all.close()
        mine, every = named(heard_a), named(heard_all)
        assert mine["job"] == {jobs[team_a]} and mine["agent"] <= {agent_ids[team_a]}, mine
        assert {jobs[team_a], jobs[team_b]} <= every["job"], every
        assert not any(B_AGENT in json.dumps(d, default=str) or B_TITLE in json.dumps(d, default=str)
                       for _, d in heard_a.events)
        assert any(B_AGENT in json.dumps(d, default=str) for _, d in heard_all.events), "the admin heard B's phone"
    finally:
        for rack in racks:
            with contextlib.suppress(Exception):
                await rack.disconnect()
        await conn.close()


async def test_a_phone_moved_to_another_team_leaves_its_viewers_and_controller(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    """Within the token re-check: the watch and the control end, and the phone is then unknown to them."""
    pool = server.services.pool
    async with pool.acquire() as conn:
        team_a, team_b = await add_team(conn, "team-a"), await add_team(conn, "team-b")
    alice = await person_token(server.url, server.session, "alice", "operator")
    token = await server.add_agent("rack")
    async with pool.acquire() as conn:
        await set_teams(conn, "alice", [team_a])
        await move_agent(conn, "rack", team_a)
    await agent_factory("rack", virtual=1, token=token)
    phone = (await server.ok("GET", "/api/devices"))[0]["id"]
    heard = await Listener(server.url, alice).connect()
    try:
        assert (await heard.call(sc.SCREEN_WATCH, {"device_id": phone, "max_width": 320}))["ok"]
        assert (await heard.call(sc.SCREEN_CONTROL, {"device_id": phone, "take": True}))["ok"]
        async with pool.acquire() as conn:
            await move_agent(conn, "rack", team_b)
        screen = server.services.screen
        await eventually(lambda: _now(not screen.watchers.get(phone) and screen.control.held(phone) is None),
                         timeout=20)
        again = await heard.call(sc.SCREEN_WATCH, {"device_id": phone, "max_width": 320})
        assert again["ok"] is False and again["error"]["code"] == "not_found", again
    finally:
        await heard.close()
    device = next(d for d in await server.ok("GET", "/api/devices") if d["id"] == phone)
    assert device["paused_by"] is None, "the control's pause was given back"
