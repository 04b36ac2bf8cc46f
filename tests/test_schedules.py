"""Recurring schedules: CRUD, firing on a fake clock (interval, cron in a time zone), enable/disable,
run now, missed firings, and each firing making one job however many server processes run."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from phonefleet.server.schedules import ScheduleFirer
from phonefleet.server.store import schedules as schedules_store
from phonefleet.sim.agent import SimDashboard
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job

T0 = datetime(2024, 1, 10, 7, 0, tzinfo=UTC)
"""A winter morning: Europe/Berlin is UTC+1."""

ServerFactory = Callable[..., Awaitable[RunningServer]]


class FakeClock:
    """Shared by a server's ``Schedules`` and its firer; moves only when a test says so."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


async def quiet_server(server_factory: ServerFactory, clock: FakeClock) -> RunningServer:
    """A server whose background maintenance is stopped (the test runs it) and whose schedules read ``clock``."""
    srv = await server_factory()
    await srv.services.maintenance.stop()
    srv.services.schedules.clock = clock
    return srv


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def quiet(server_factory: ServerFactory, clock: FakeClock) -> RunningServer:
    return await quiet_server(server_factory, clock)


def firer(server: RunningServer) -> ScheduleFirer:
    duty = next(d for d in server.services.maintenance.duties if d.name == "schedule_firer")
    assert isinstance(duty, ScheduleFirer)
    return duty


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def schedule_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "every minute", "template": open_url_job(title="scheduled"), "interval_sec": 60}
    body.update(overrides)
    return body


async def schedule_jobs(server: RunningServer, schedule_id: int) -> list[dict[str, Any]]:
    body = await server.ok("GET", f"/api/schedules/{schedule_id}/jobs")
    items: list[dict[str, Any]] = body["items"]
    assert body["total"] == len(items)
    return items


async def rejected(server: RunningServer, method: str, path: str, body: Any, field: str) -> None:
    status, answer = await server.request(method, path, json=body)
    assert status == 422, (status, answer)
    assert answer["error"]["code"] == "validation_error"
    assert field in [d.get("field") for d in answer["error"]["details"]], answer


# ---------------------------------------------------------------------------- definitions


async def test_schedule_crud_round_trip(quiet: RunningServer) -> None:
    created = await quiet.ok("POST", "/api/schedules", schedule_body(misfire_policy="skip"))
    assert created["enabled"] is True and created["misfire_policy"] == "skip"
    assert created["template"]["title"] == "scheduled" and created["timezone"] == "UTC"
    assert ts(created["next_run_at"]) == T0 + timedelta(seconds=60)
    assert created["last_run_at"] is None and created["last_job_id"] is None
    sid = created["id"]

    assert await quiet.ok("GET", f"/api/schedules/{sid}") == created
    other = await quiet.ok("POST", "/api/schedules", schedule_body(name="nightly", cron="0 3 * * *",
                                                                   interval_sec=None, enabled=False))
    listing = await quiet.ok("GET", "/api/schedules")
    assert listing["total"] == 2 and [s["id"] for s in listing["items"]] == [sid, other["id"]]
    assert [s["id"] for s in (await quiet.ok("GET", "/api/schedules?enabled=false"))["items"]] == [other["id"]]
    assert [s["id"] for s in (await quiet.ok("GET", "/api/schedules?enabled=true"))["items"]] == [sid]

    patched = await quiet.ok("PATCH", f"/api/schedules/{sid}", {
        "name": "every two minutes", "interval_sec": 120, "template": open_url_job(title="renamed")})
    assert patched["name"] == "every two minutes" and patched["template"]["title"] == "renamed"
    assert ts(patched["next_run_at"]) == T0 + timedelta(seconds=120), "a new rule counts from now"
    switched = await quiet.ok("PATCH", f"/api/schedules/{sid}", {"interval_sec": None, "cron": "@hourly"})
    assert switched["cron"] == "@hourly" and switched["interval_sec"] is None
    assert ts(switched["next_run_at"]) == datetime(2024, 1, 10, 8, 0, tzinfo=UTC)

    status, body = await quiet.request("POST", "/api/schedules", json=schedule_body(name="nightly"))
    assert status == 409 and body["error"]["code"] == "conflict"
    status, body = await quiet.request("PATCH", f"/api/schedules/{sid}", json={"name": "nightly"})
    assert status == 409 and body["error"]["code"] == "conflict"

    status, _ = await quiet.request("DELETE", f"/api/schedules/{sid}")
    assert status == 204
    for method, path in [("GET", f"/api/schedules/{sid}"), ("PATCH", f"/api/schedules/{sid}"),
                         ("DELETE", f"/api/schedules/{sid}"), ("POST", f"/api/schedules/{sid}/run"),
                         ("GET", f"/api/schedules/{sid}/jobs")]:
        status, body = await quiet.request(method, path, json={} if method == "PATCH" else None)
        assert status == 404 and body["error"]["code"] == "not_found", (method, path, body)


async def test_invalid_rules_are_rejected_naming_the_field(quiet: RunningServer) -> None:
    await rejected(quiet, "POST", "/api/schedules", schedule_body(cron="61 * * * *", interval_sec=None), "cron")
    await rejected(quiet, "POST", "/api/schedules", schedule_body(cron="every day", interval_sec=None), "cron")
    await rejected(quiet, "POST", "/api/schedules", schedule_body(timezone="Mars/Olympus"), "timezone")
    await rejected(quiet, "POST", "/api/schedules", schedule_body(cron="0 9 * * *"), "interval_sec")
    await rejected(quiet, "POST", "/api/schedules", schedule_body(interval_sec=None), "interval_sec")
    await rejected(quiet, "POST", "/api/schedules", schedule_body(interval_sec=0), "interval_sec")
    await rejected(quiet, "POST", "/api/schedules", schedule_body(template={"title": "no plan"}), "template.plan")
    assert (await quiet.ok("GET", "/api/schedules"))["total"] == 0

    sid = (await quiet.ok("POST", "/api/schedules", schedule_body(cron="0 9 * * *", interval_sec=None)))["id"]
    await rejected(quiet, "PATCH", f"/api/schedules/{sid}", {"interval_sec": 60}, "interval_sec")
    await rejected(quiet, "PATCH", f"/api/schedules/{sid}", {"cron": None}, "cron")
    await rejected(quiet, "PATCH", f"/api/schedules/{sid}", {"cron": "0 25 * * *"}, "cron")
    await rejected(quiet, "PATCH", f"/api/schedules/{sid}", {"timezone": "Nowhere/Town"}, "timezone")
    await rejected(quiet, "PATCH", f"/api/schedules/{sid}", {"enabled": None}, "enabled")
    unchanged = await quiet.ok("GET", f"/api/schedules/{sid}")
    assert unchanged["cron"] == "0 9 * * *" and unchanged["interval_sec"] is None


# ---------------------------------------------------------------------------- firing


async def test_interval_schedule_fires_on_the_clock(quiet: RunningServer, clock: FakeClock) -> None:
    sid = (await quiet.ok("POST", "/api/schedules", schedule_body()))["id"]
    await quiet.services.maintenance.run_once()
    assert await schedule_jobs(quiet, sid) == [], "not due yet"

    first_due = clock.advance(60)
    await quiet.services.maintenance.run_once()
    jobs = await schedule_jobs(quiet, sid)
    assert len(jobs) == 1
    assert jobs[0]["schedule_id"] == sid and ts(jobs[0]["scheduled_for"]) == first_due
    assert jobs[0]["title"] == "scheduled"
    schedule = await quiet.ok("GET", f"/api/schedules/{sid}")
    assert schedule["last_job_id"] == jobs[0]["id"] and ts(schedule["last_run_at"]) == first_due
    assert ts(schedule["next_run_at"]) == first_due + timedelta(seconds=60)

    await quiet.services.maintenance.run_once()
    assert len(await schedule_jobs(quiet, sid)) == 1, "a firing happens once"

    second_due = clock.advance(60)
    await quiet.services.maintenance.run_once()
    jobs = await schedule_jobs(quiet, sid)
    assert [ts(j["scheduled_for"]) for j in jobs] == [second_due, first_due], "newest first"


async def test_a_short_lag_fires_every_due_firing(quiet: RunningServer, clock: FakeClock) -> None:
    sid = (await quiet.ok("POST", "/api/schedules", schedule_body(interval_sec=10)))["id"]
    clock.advance(25)
    assert await firer(quiet).run_once() == 2
    jobs = await schedule_jobs(quiet, sid)
    assert sorted(ts(j["scheduled_for"]) for j in jobs) == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)]
    assert ts((await quiet.ok("GET", f"/api/schedules/{sid}"))["next_run_at"]) == T0 + timedelta(seconds=30)


@pytest.mark.parametrize(("now", "local_nine_utc"), [
    (T0, datetime(2024, 1, 10, 8, 0, tzinfo=UTC)),
    (datetime(2024, 7, 10, 5, 0, tzinfo=UTC), datetime(2024, 7, 10, 7, 0, tzinfo=UTC)),
], ids=["winter", "summer"])
async def test_cron_fires_at_the_local_wall_time(quiet: RunningServer, clock: FakeClock, now: datetime,
                                                 local_nine_utc: datetime) -> None:
    clock.now = now
    created = await quiet.ok("POST", "/api/schedules", schedule_body(cron="0 9 * * *", interval_sec=None,
                                                                     timezone="Europe/Berlin"))
    assert ts(created["next_run_at"]) == local_nine_utc
    clock.now = local_nine_utc - timedelta(seconds=1)
    await quiet.services.maintenance.run_once()
    assert await schedule_jobs(quiet, created["id"]) == []

    clock.now = local_nine_utc + timedelta(seconds=1)
    await quiet.services.maintenance.run_once()
    jobs = await schedule_jobs(quiet, created["id"])
    assert [ts(j["scheduled_for"]) for j in jobs] == [local_nine_utc]
    schedule = await quiet.ok("GET", f"/api/schedules/{created['id']}")
    assert ts(schedule["next_run_at"]) == local_nine_utc + timedelta(days=1)


async def test_disabled_schedule_does_not_fire_and_enabling_counts_from_now(quiet: RunningServer,
                                                                            clock: FakeClock) -> None:
    sid = (await quiet.ok("POST", "/api/schedules", schedule_body()))["id"]
    disabled = await quiet.ok("PATCH", f"/api/schedules/{sid}", {"enabled": False})
    assert disabled["enabled"] is False and disabled["next_run_at"] is None

    clock.advance(600)
    await quiet.services.maintenance.run_once()
    assert await schedule_jobs(quiet, sid) == []

    enabled = await quiet.ok("PATCH", f"/api/schedules/{sid}", {"enabled": True})
    assert ts(enabled["next_run_at"]) == clock.now + timedelta(seconds=60), "missed while disabled: not misfires"
    await quiet.services.maintenance.run_once()
    assert await schedule_jobs(quiet, sid) == []
    again = await quiet.ok("PATCH", f"/api/schedules/{sid}", {"enabled": True, "misfire_policy": "skip"})
    assert again["next_run_at"] == enabled["next_run_at"], "enabling an enabled schedule moves nothing"

    due = clock.advance(60)
    await quiet.services.maintenance.run_once()
    assert [ts(j["scheduled_for"]) for j in await schedule_jobs(quiet, sid)] == [due]


async def test_created_disabled_has_no_next_run(quiet: RunningServer) -> None:
    created = await quiet.ok("POST", "/api/schedules", schedule_body(enabled=False))
    assert created["next_run_at"] is None
    async with quiet.services.pool.acquire() as conn:
        assert await schedules_store.next_due(conn) is None


async def test_next_due_is_the_soonest_enabled_schedule(quiet: RunningServer) -> None:
    await quiet.ok("POST", "/api/schedules", schedule_body(name="hourly", interval_sec=3600))
    soon = await quiet.ok("POST", "/api/schedules", schedule_body(name="soon", interval_sec=30))
    await quiet.ok("POST", "/api/schedules", schedule_body(name="off", interval_sec=5, enabled=False))
    async with quiet.services.pool.acquire() as conn:
        row = await schedules_store.next_due(conn)
    assert row is not None
    assert (row["id"], row["name"], row["next_run_at"]) == (soon["id"], "soon", T0 + timedelta(seconds=30))


async def test_run_now_creates_a_job_that_reaches_the_phones(quiet: RunningServer, clock: FakeClock) -> None:
    agent = await quiet.sim_agent("pc", 2)
    sid = (await quiet.ok("POST", "/api/schedules", schedule_body(enabled=False)))["id"]
    job = await quiet.ok("POST", f"/api/schedules/{sid}/run")
    assert job["schedule_id"] == sid and ts(job["scheduled_for"]) == clock.now
    assert job["status"] == "active" and job["target_count"] == 2
    await agent.wait_for(lambda: len(agent.orders) == 2)
    assert {o["job_id"] for o in agent.orders.values()} == {job["id"]}
    schedule = await quiet.ok("GET", f"/api/schedules/{sid}")
    assert schedule["last_job_id"] == job["id"] and schedule["next_run_at"] is None, "run now fires nothing else"


async def test_run_now_at_a_firing_instant_leaves_that_firing_done(quiet: RunningServer, clock: FakeClock) -> None:
    """The unique key on (schedule_id, scheduled_for): the firing meets the run-now's job and just moves on."""
    sid = (await quiet.ok("POST", "/api/schedules", schedule_body()))["id"]
    due = clock.advance(60)
    job = await quiet.ok("POST", f"/api/schedules/{sid}/run")
    assert ts(job["scheduled_for"]) == due
    assert await firer(quiet).run_once() == 0
    assert [j["id"] for j in await schedule_jobs(quiet, sid)] == [job["id"]]
    schedule = await quiet.ok("GET", f"/api/schedules/{sid}")
    assert ts(schedule["next_run_at"]) == due + timedelta(seconds=60) and schedule["last_job_id"] == job["id"]
    status, body = await quiet.request("POST", f"/api/schedules/{sid}/run")
    assert status == 409 and body["error"]["code"] == "conflict", "one job per schedule and instant"


@pytest.mark.parametrize("rule", [{"interval_sec": 600}, {"cron": "*/10 * * * *", "interval_sec": None}],
                         ids=["interval", "cron"])
async def test_missed_firings_skip_creates_no_job(quiet: RunningServer, clock: FakeClock,
                                                  rule: dict[str, Any]) -> None:
    sid = (await quiet.ok("POST", "/api/schedules", schedule_body(misfire_policy="skip", **rule)))["id"]
    clock.advance(10 * 600 + 30)  # ten firings missed while "no server ran"
    assert await firer(quiet).run_once() == 0
    assert await schedule_jobs(quiet, sid) == []
    schedule = await quiet.ok("GET", f"/api/schedules/{sid}")
    assert ts(schedule["next_run_at"]) == T0 + timedelta(seconds=11 * 600)
    assert ts(schedule["next_run_at"]) > clock.now and schedule["last_job_id"] is None


@pytest.mark.parametrize("rule", [{"interval_sec": 600}, {"cron": "*/10 * * * *", "interval_sec": None}],
                         ids=["interval", "cron"])
async def test_missed_firings_run_once_creates_exactly_one_job(quiet: RunningServer, clock: FakeClock,
                                                               rule: dict[str, Any]) -> None:
    sid = (await quiet.ok("POST", "/api/schedules", schedule_body(misfire_policy="run_once", **rule)))["id"]
    clock.advance(10 * 600 + 30)
    assert await firer(quiet).run_once() == 1
    jobs = await schedule_jobs(quiet, sid)
    assert [ts(j["scheduled_for"]) for j in jobs] == [T0 + timedelta(seconds=10 * 600)], "the latest missed one"
    schedule = await quiet.ok("GET", f"/api/schedules/{sid}")
    assert ts(schedule["next_run_at"]) == T0 + timedelta(seconds=11 * 600)
    assert schedule["last_job_id"] == jobs[0]["id"]
    assert await firer(quiet).run_once() == 0


async def test_deleting_a_schedule_keeps_its_jobs(quiet: RunningServer, clock: FakeClock) -> None:
    sid = (await quiet.ok("POST", "/api/schedules", schedule_body()))["id"]
    clock.advance(60)
    await quiet.services.maintenance.run_once()
    clock.advance(1)
    ran = await quiet.ok("POST", f"/api/schedules/{sid}/run")
    made = await schedule_jobs(quiet, sid)
    assert len(made) == 2
    status, _ = await quiet.request("DELETE", f"/api/schedules/{sid}")
    assert status == 204
    for job in made:
        kept = await quiet.ok("GET", f"/api/jobs/{job['id']}")
        assert kept["schedule_id"] is None and kept["scheduled_for"] == job["scheduled_for"]
    assert (await quiet.ok("GET", f"/api/jobs/{ran['id']}"))["title"] == "scheduled"


# ---------------------------------------------------------------------------- several nodes


async def test_dashboards_hear_every_schedule_change(quiet: RunningServer, clock: FakeClock) -> None:
    dash = SimDashboard(quiet.url, ADMIN)
    await dash.connect()
    try:
        created = await quiet.ok("POST", "/api/schedules", schedule_body())
        await quiet.ok("PATCH", f"/api/schedules/{created['id']}", {"interval_sec": 30})
        clock.advance(30)
        assert await firer(quiet).run_once() == 1
        clock.advance(1)
        await quiet.ok("POST", f"/api/schedules/{created['id']}/run", expect=201)
        await quiet.ok("DELETE", f"/api/schedules/{created['id']}", expect=204)
        await dash.wait_for(lambda: len(dash.events("schedule:changed")) == 5)
        assert dash.events("schedule:changed") == [{"schedule_id": created["id"], "deleted": False}] * 4 + [
            {"schedule_id": created["id"], "deleted": True}]
    finally:
        await dash.disconnect()


async def test_two_firers_racing_on_one_database_fire_once(server_factory: ServerFactory,
                                                           clock: FakeClock) -> None:
    a = await quiet_server(server_factory, clock)
    b = await quiet_server(server_factory, clock)
    sid = (await a.ok("POST", "/api/schedules", schedule_body(interval_sec=10)))["id"]
    for n in range(1, 6):
        clock.advance(10)
        created = await asyncio.gather(*(firer(s).run_once() for s in (a, b, a, b)))
        assert sum(created) == 1, created
        assert len(await schedule_jobs(b, sid)) == n


async def test_two_server_processes_fire_each_firing_once(two_nodes: list[str], dsn: str) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as session:
        async with session.post(two_nodes[0] + "/api/schedules", json=schedule_body(interval_sec=1)) as r:
            assert r.status == 201, await r.text()
            sid = (await r.json())["id"]
        async with session.get(f"{two_nodes[1]}/api/schedules/{sid}") as r:
            assert r.status == 200, await r.text()

    conn = await asyncpg.connect(dsn)
    try:
        async def firings() -> int:
            n: int = await conn.fetchval("SELECT count(DISTINCT scheduled_for) FROM jobs WHERE schedule_id = $1", sid)
            return n if n >= 3 else 0

        await eventually(firings, timeout=30, interval=0.2)
        twice = await conn.fetch(
            """SELECT scheduled_for, count(*) AS n FROM jobs WHERE schedule_id = $1
               GROUP BY scheduled_for HAVING count(*) > 1""", sid)
        assert twice == []
        counts = await conn.fetchrow(
            "SELECT count(*) AS total, count(DISTINCT scheduled_for) AS distinct_firings FROM jobs"
            " WHERE schedule_id = $1", sid)
        assert counts is not None and counts["total"] == counts["distinct_firings"] >= 3
    finally:
        await conn.close()
