"""A late result wins over the server's guess: an assignment declared lost, then reported by the phone that
ran it, is settled once, whatever became of the retry made meanwhile (``protocol.states.LATE_RESULT_RULE``)."""

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from phonefleet.protocol import events as ev
from phonefleet.sim.agent import SimAgent
from tests.conftest import RunningServer, eventually, open_url_job

Factory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def server(server_factory: Factory) -> RunningServer:
    return await server_factory(agent_grace_sec=1.0)


async def rows(server: RunningServer, job_id: int) -> dict[int, dict[str, Any]]:
    body = await server.ok("GET", f"/api/jobs/{job_id}/assignments")
    return {a["id"]: a for a in body["items"]}


async def job_of(server: RunningServer, job_id: int) -> dict[str, Any]:
    job: dict[str, Any] = await server.ok("GET", f"/api/jobs/{job_id}")
    return job


async def lose_a_running_run(server: RunningServer, **job: Any) -> tuple[SimAgent, dict[str, Any], int]:
    """One phone takes the job, starts it, and its agent goes silent until the server declares the run lost."""
    doomed = await server.sim_agent("pc-doomed", 1)
    created = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1, **job))
    await doomed.wait_for(lambda: len(doomed.orders) == 1)
    (aid,) = doomed.orders
    await doomed.start([aid])
    await doomed.disconnect()

    async def lost() -> bool:
        return bool((await rows(server, created["id"]))[aid]["error_code"] == "lost")

    await eventually(lost, timeout=15)
    return doomed, created, aid


async def late(doomed: SimAgent, aid: int, outcome: str = "completed", **extra: Any) -> dict[str, Any]:
    """The silent agent is back (without re-registering yet) and sends the result from its outbox."""
    await doomed.connect(hello=False)
    ack = await doomed.finish([aid], outcome=outcome, **extra)
    assert ack["ok"], ack
    assert ack["data"]["acknowledged"] == [aid]
    return ack


async def test_late_success_of_a_slot_with_no_retries_left_turns_its_failure_into_a_success(
        server: RunningServer) -> None:
    doomed, job, aid = await lose_a_running_run(server)
    before = await job_of(server, job["id"])
    assert (before["status"], before["completed_count"], before["failed_count"]) == ("completed", 0, 1)

    ack = await late(doomed, aid)
    assert ack["data"]["recorded"] == [aid]
    after = await job_of(server, job["id"])
    assert (after["status"], after["completed_count"], after["failed_count"]) == ("completed", 1, 0)
    row = (await rows(server, job["id"]))[aid]
    assert (row["status"], row["error_code"], row["progress"]) == ("completed", None, 1)
    events = await server.services.pool.fetch("SELECT kind, data FROM job_events WHERE job_id = $1", job["id"])
    assert [e["data"]["slot"] for e in events if e["kind"] == "late_result"] == ["failed slot completed"]


async def test_late_success_drops_a_retry_still_waiting_for_a_phone(server: RunningServer) -> None:
    doomed, job, aid = await lose_a_running_run(server, max_retries=2)
    waiting = await job_of(server, job["id"])
    assert waiting["status"] == "active"  # the retry is due, but no phone is there to take it

    await late(doomed, aid)
    after = await job_of(server, job["id"])
    assert (after["status"], after["completed_count"], after["failed_count"]) == ("completed", 1, 0)
    assert await server.services.pool.fetchval("SELECT retry_pending FROM jobs WHERE id = $1", job["id"]) == 0
    await doomed.hello()  # the phone is back: nothing of this job is left to run on it
    assert await server.services.distributor.fill() == 0
    assert len(await rows(server, job["id"])) == 1


async def test_late_success_cancels_an_unstarted_retry_on_another_phone(server: RunningServer) -> None:
    doomed, job, aid = await lose_a_running_run(server, max_retries=1)
    other = await server.sim_agent("pc-other", 1)
    await other.wait_for(lambda: len(other.orders) == 1, timeout=10)
    (retry,) = other.orders
    assert other.orders[retry]["attempt"] == 2

    await late(doomed, aid)
    await other.wait_for(lambda: any(retry in e["assignment_ids"] for e in other.events(ev.JOB_CANCELLED)))
    after = await job_of(server, job["id"])
    assert (after["status"], after["completed_count"], after["failed_count"]) == ("completed", 1, 0)
    history = await rows(server, job["id"])
    assert (history[retry]["status"], history[retry]["error_code"]) == ("cancelled", "superseded")
    assert history[retry]["slot_id"] == aid
    devices = {d["serial"]: d["state"] for d in await server.ok("GET", "/api/devices")}
    assert devices["pc-other-000"] == "idle"


@pytest.mark.parametrize("retry_outcome", ["completed", "failed"])
async def test_late_success_while_the_retry_runs_counts_the_slot_once(server: RunningServer,
                                                                      retry_outcome: str) -> None:
    doomed, job, aid = await lose_a_running_run(server, max_retries=3)
    other = await server.sim_agent("pc-other", 1)
    await other.wait_for(lambda: len(other.orders) == 1, timeout=10)
    (retry,) = other.orders
    await other.start([retry])

    await late(doomed, aid)
    during = await job_of(server, job["id"])
    assert (during["status"], during["completed_count"], during["failed_count"]) == ("active", 1, 0)
    assert (await rows(server, job["id"]))[retry]["status"] == "running", "a started retry runs on"

    await other.finish([retry], outcome=retry_outcome, error=None if retry_outcome == "completed" else "boom")
    after = await job_of(server, job["id"])
    assert (after["status"], after["completed_count"], after["failed_count"]) == ("completed", 1, 0)
    history = await rows(server, job["id"])
    assert len(history) == 2, "a retry that ends after its slot was settled is not retried"
    assert history[retry]["status"] == retry_outcome and history[retry]["retry_at"] is None


async def test_late_success_after_the_retry_completed_is_kept_as_history(server: RunningServer) -> None:
    doomed, job, aid = await lose_a_running_run(server, max_retries=1)
    other = await server.sim_agent("pc-other", 1)
    await other.wait_for(lambda: len(other.orders) == 1, timeout=10)
    (retry,) = other.orders
    await other.finish([retry])
    assert (await job_of(server, job["id"]))["completed_count"] == 1

    await late(doomed, aid)
    after = await job_of(server, job["id"])
    assert (after["status"], after["completed_count"], after["failed_count"]) == ("completed", 1, 0)
    history = await rows(server, job["id"])
    assert [history[i]["status"] for i in (aid, retry)] == ["completed", "completed"]


async def test_late_success_after_the_retry_failed_for_good_completes_the_slot(server: RunningServer) -> None:
    doomed, job, aid = await lose_a_running_run(server, max_retries=1)
    other = await server.sim_agent("pc-other", 1)
    await other.wait_for(lambda: len(other.orders) == 1, timeout=10)
    (retry,) = other.orders
    await other.finish([retry], outcome="failed", error="boom")
    before = await job_of(server, job["id"])
    assert (before["status"], before["completed_count"], before["failed_count"]) == ("completed", 0, 1)

    await late(doomed, aid)
    after = await job_of(server, job["id"])
    assert (after["status"], after["completed_count"], after["failed_count"]) == ("completed", 1, 0)


async def test_late_failure_replaces_the_guess_and_counts_nothing_again(server: RunningServer) -> None:
    doomed, job, aid = await lose_a_running_run(server)
    await late(doomed, aid, outcome="failed", error="the app crashed", error_code="step_failed")
    after = await job_of(server, job["id"])
    assert (after["status"], after["completed_count"], after["failed_count"]) == ("completed", 0, 1)
    row = (await rows(server, job["id"]))[aid]
    assert (row["status"], row["error_code"], row["error"]) == ("failed", "step_failed", "the app crashed")


async def test_only_the_agent_that_ran_it_may_overturn_a_lost_run(server: RunningServer) -> None:
    _doomed, job, aid = await lose_a_running_run(server)
    stranger = await server.sim_agent("pc-stranger", 1)
    ack = await stranger.finish([aid])
    assert ack["data"]["recorded"] == []
    after = await job_of(server, job["id"])
    assert (after["completed_count"], after["failed_count"]) == (0, 1)
    assert (await rows(server, job["id"]))[aid]["error_code"] == "lost"


async def test_a_server_detected_timeout_is_not_overturned(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    job = await server.ok("POST", "/api/jobs", open_url_job(timeout_sec=1))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    (aid,) = agent.orders
    await agent.start([aid])

    async def timed_out() -> bool:
        return bool((await rows(server, job["id"]))[aid]["status"] == "timed_out")

    await eventually(timed_out, timeout=15)
    ack = await agent.finish([aid])
    assert ack["data"]["recorded"] == []
    assert (await rows(server, job["id"]))[aid]["status"] == "timed_out"


async def test_a_late_result_brings_its_step_timeline_and_crashes(server: RunningServer) -> None:
    doomed, job, aid = await lose_a_running_run(server)
    assert (await server.ok("GET", f"/api/assignments/{aid}/steps"))["steps"][0]["outcome"] == "not_run"
    steps = [{"step_index": 0, "type": "open_url", "outcome": "completed", "exit_code": 0, "output_tail": "ok\n",
              "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z"}]
    crashes = [{"process": "com.example", "line": "E AndroidRuntime: FATAL EXCEPTION: main"}]
    await late(doomed, aid, outcome="completed", steps=steps, crashes=crashes)
    timeline = await server.ok("GET", f"/api/assignments/{aid}/steps")
    assert [(s["outcome"], s["exit_code"], s["output_tail"]) for s in timeline["steps"]] == [("completed", 0, "ok\n")]
    assert timeline["crashes"] == crashes and (await rows(server, job["id"]))[aid]["crashes"] == crashes
    ack = await doomed.finish([aid], outcome="failed", steps=[{**steps[0], "outcome": "failed"}])
    assert ack["data"]["recorded"] == []  # a replay of an ended run changes nothing, its evidence neither
    assert (await server.ok("GET", f"/api/assignments/{aid}/steps"))["steps"][0]["outcome"] == "completed"
