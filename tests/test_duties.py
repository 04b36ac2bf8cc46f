"""Each maintenance duty on its own: the server's maintenance loop is slowed to an hour, and the test runs
the duty's ``run_once`` itself, so what changed is that duty's doing."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from phonefleet.server.duties.fill_sweeper import FillSweeper
from phonefleet.server.duties.health_watch import HealthWatch
from phonefleet.server.duties.job_activator import JobActivator
from phonefleet.server.duties.lease_rescuer import LeaseRescuer
from phonefleet.server.duties.retry_waker import RetryWaker
from phonefleet.server.maintenance import Duty
from tests.conftest import RunningServer, eventually, open_url_job

D = TypeVar("D")


@pytest.fixture
async def quiet(server_factory: Callable[..., Awaitable[RunningServer]]) -> RunningServer:
    """A server whose maintenance loop ran once at start and then waits an hour."""
    return await server_factory(maintenance_sec=3600.0, agent_grace_sec=0.5, retry_base_sec=0.05)


def duty(server: RunningServer, kind: type[D]) -> D:
    found = next(d for d in server.services.maintenance.duties if isinstance(d, kind))
    return found


async def job(server: RunningServer, job_id: int) -> dict[str, Any]:
    found: dict[str, Any] = await server.ok("GET", f"/api/jobs/{job_id}")
    return found


async def test_every_duty_has_its_own_interval_and_a_name(quiet: RunningServer) -> None:
    duties: list[Duty] = list(quiet.services.maintenance.duties)
    assert {d.name for d in duties} == {"lease_rescuer", "schedule_firer", "job_activator", "retry_waker",
                                        "fill_sweeper", "health_watch", "artifact_retention"}
    assert all(d.interval_sec == 3600.0 for d in duties)


async def test_the_lease_rescuer_ends_the_work_of_a_silent_agent_as_lost(quiet: RunningServer) -> None:
    agent = await quiet.sim_agent("pc", 1)
    created = await quiet.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) == 1)
    await agent.start(list(agent.orders))
    await agent.disconnect()
    rescuer = duty(quiet, LeaseRescuer)

    async def rescued() -> bool:  # past the agent's half-second grace
        return await rescuer.run_once() > 0

    await eventually(rescued, timeout=10)
    (row,) = (await quiet.ok("GET", f"/api/jobs/{created['id']}/assignments"))["items"]
    assert (row["status"], row["error_code"]) == ("failed", "lost")
    assert [d["state"] for d in await quiet.ok("GET", "/api/devices")] == ["offline"]
    assert await rescuer.run_once() == 0, "nothing left to rescue"


async def test_the_job_activator_starts_a_job_whose_time_has_come(quiet: RunningServer) -> None:
    await quiet.sim_agent("pc", 1)
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    created = await quiet.ok("POST", "/api/jobs", open_url_job(run_at=soon))
    assert created["status"] == "scheduled"
    activator = duty(quiet, JobActivator)

    async def activated() -> bool:
        return await activator.run_once() > 0

    await eventually(activated, timeout=10)
    after = await job(quiet, created["id"])
    assert (after["status"], after["target_count"], after["assigned_count"]) == ("active", 1, 1)


async def test_the_retry_waker_fills_a_job_when_its_retry_is_due(quiet: RunningServer) -> None:
    agent = await quiet.sim_agent("pc", 2)
    await quiet.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1, max_retries=1))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    await quiet.ok("POST", "/api/scheduler/stop", expect=200)  # the failure's own fill finds nothing to do
    await agent.finish(list(agent.orders), outcome="failed", error="boom")
    await quiet.services.pool.execute("UPDATE scheduler_state SET running = true")  # on, without a fill
    waker = duty(quiet, RetryWaker)

    async def woken() -> bool:  # after the retry's backoff
        return await waker.run_once() > 0

    await eventually(woken, timeout=10)
    await agent.wait_for(lambda: len(agent.orders) == 2, timeout=10)
    assert max(o["attempt"] for o in agent.orders.values()) == 2


async def test_the_fill_sweeper_marks_a_job_no_phone_may_run_and_frees_one_that_may(quiet: RunningServer) -> None:
    await quiet.sim_agent("pc", 1)
    await quiet.ok("POST", "/api/scheduler/stop", expect=200)
    waiting = await quiet.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1,
                                                              filters={"models": ["Nokia 3310"]}))
    runnable = await quiet.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1))
    await quiet.services.pool.execute("UPDATE jobs SET starved = true WHERE id = $1", runnable["id"])
    await quiet.services.pool.execute("UPDATE scheduler_state SET running = true")
    await duty(quiet, FillSweeper).run_once()
    starved = {r["id"]: r["starved"] for r in await quiet.services.pool.fetch("SELECT id, starved FROM jobs")}
    assert starved == {waiting["id"]: True, runnable["id"]: False}
    assert (await job(quiet, runnable["id"]))["assigned_count"] == 1


async def test_the_health_watch_quarantines_a_long_illness_and_asks_for_self_tests(quiet: RunningServer) -> None:
    await quiet.ok("PATCH", "/api/fleet/policy", {"quarantine": {"unhealthy_max_sec": 1, "cooldown_sec": 0}})
    agent = await quiet.sim_agent("pc", 2)
    sick, fine = agent.serials
    await agent.report([{**agent.devices()[0], "healthy": False, "health_reason": "probe timed out after 5 s"}])
    watch = duty(quiet, HealthWatch)
    assert await watch.run_once() == 0, "not ill for long enough yet"

    async def quarantined() -> bool:
        await watch.run_once()
        states = {d["serial"]: d["state"] for d in await quiet.ok("GET", "/api/devices")}
        return states == {sick: "quarantined", fine: "idle"}

    await eventually(quarantined, timeout=10)
    await agent.wait_for(lambda: agent.events("device:selftest") == [{"serial": sick}])
    assert await watch.run_once() == 0, "asked once per selftest_every_sec"
