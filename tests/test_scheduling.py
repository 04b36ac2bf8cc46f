"""Job control from the job-scheduler world: delays, dependencies, requeue, batch control,
concurrency limits and the distribution switch, against the real server and database."""

from datetime import UTC, datetime, timedelta
from typing import Any

from phonefleet.sim.agent import SimAgent, SimDashboard
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job


async def job(server: RunningServer, job_id: int) -> dict[str, Any]:
    body: dict[str, Any] = await server.ok("GET", f"/api/jobs/{job_id}")
    return body


async def status_is(server: RunningServer, job_id: int, status: str, timeout: float = 10.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await job(server, job_id)
        return body if body["status"] == status else None

    found = await eventually(check, timeout=timeout)
    assert found is not None
    return found


def of_job(agent: SimAgent, job_id: int) -> list[int]:
    return sorted(i for i, o in agent.orders.items() if o["job_id"] == job_id)


async def finish_job(agent: SimAgent, job_id: int, n: int, outcome: str = "completed", **extra: Any) -> None:
    await agent.wait_for(lambda: len(of_job(agent, job_id)) >= n)
    await agent.finish(of_job(agent, job_id), outcome, **extra)


# ------------------------------------------------------------------ delayed jobs


async def test_run_at_keeps_a_job_scheduled_until_its_second(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    run_at = datetime.now(UTC) + timedelta(seconds=1.5)
    created = await server.ok("POST", "/api/jobs", open_url_job(run_at=run_at.isoformat()))
    assert created["status"] == "scheduled" and created["target_count"] is None
    assert agent.orders == {}
    active = await status_is(server, created["id"], "active")
    opened = datetime.fromisoformat(active["activated_at"])
    assert run_at <= opened < run_at + timedelta(seconds=1), "opened at its time, to the second"
    await agent.wait_for(lambda: len(of_job(agent, created["id"])) == 2)


async def test_resume_of_a_job_paused_before_it_ran_sends_it_back_to_wait(server: RunningServer) -> None:
    await server.sim_agent("pc", 1)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = await server.ok("POST", "/api/jobs", open_url_job(run_at=later))
    assert (await server.ok("PATCH", f"/api/jobs/{created['id']}", {"status": "paused"}))["status"] == "paused"
    resumed = await server.ok("PATCH", f"/api/jobs/{created['id']}", {"status": "active"})
    assert resumed["status"] == "scheduled" and resumed["assigned_count"] == 0


# ------------------------------------------------------------------ dependencies


async def test_dependent_waits_for_its_prerequisite_to_complete(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    first = await server.ok("POST", "/api/jobs", open_url_job(title="build"))
    second = await server.ok("POST", "/api/jobs", open_url_job(title="test", depends_on=[first["id"]]))
    assert second["status"] == "scheduled"
    await agent.wait_for(lambda: len(of_job(agent, first["id"])) == 2)
    assert of_job(agent, second["id"]) == []
    await finish_job(agent, first["id"], 2)
    await status_is(server, second["id"], "active")
    await agent.wait_for(lambda: len(of_job(agent, second["id"])) == 2)


async def test_failed_prerequisite_blocks_dependents_down_the_chain_and_requeue_unblocks(
        server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    first = await server.ok("POST", "/api/jobs", open_url_job(title="flash"))
    second = await server.ok("POST", "/api/jobs", open_url_job(title="smoke", depends_on=[first["id"]]))
    third = await server.ok("POST", "/api/jobs", open_url_job(title="report", depends_on=[second["id"]]))
    await finish_job(agent, first["id"], 1, "failed", error="adb: install failed", retryable=False)
    done = await status_is(server, first["id"], "completed")
    assert done["failed_count"] == 1 and done["completed_count"] == 0
    blocked = await status_is(server, second["id"], "blocked")
    assert blocked["blocked_reason"] == f"job {first['id']} completed with 1 failed slot(s)"
    chained = await status_is(server, third["id"], "blocked")
    assert chained["blocked_reason"] == f"job {second['id']} is blocked"

    requeued = await server.ok("POST", f"/api/jobs/{first['id']}/requeue", {"scope": "failed"}, expect=200)
    assert requeued["requeued"] == 1 and requeued["job"]["status"] == "active"
    assert requeued["job"]["failed_count"] == 0
    await agent.wait_for(lambda: len(of_job(agent, first["id"])) == 2, timeout=10)
    await agent.finish([max(of_job(agent, first["id"]))])
    await status_is(server, second["id"], "active")
    await status_is(server, third["id"], "scheduled")


async def test_cancelled_prerequisite_blocks_its_dependent(server: RunningServer) -> None:
    await server.sim_agent("pc", 1)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    first = await server.ok("POST", "/api/jobs", open_url_job(run_at=later))
    second = await server.ok("POST", "/api/jobs", open_url_job(depends_on=[first["id"]]))
    await server.ok("PATCH", f"/api/jobs/{first['id']}", {"status": "cancelled"})
    blocked = await status_is(server, second["id"], "blocked")
    assert blocked["blocked_reason"] == f"job {first['id']} was cancelled"
    cancelled = await server.ok("PATCH", f"/api/jobs/{second['id']}", {"status": "cancelled"})
    assert cancelled["status"] == "cancelled"


async def test_unknown_prerequisite_and_cycles_are_rejected(server: RunningServer) -> None:
    status, body = await server.request("POST", "/api/jobs", json=open_url_job(depends_on=[424242]))
    assert status == 422 and body["error"]["details"][0]["field"] == "depends_on"
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    a = await server.ok("POST", "/api/jobs", open_url_job(title="a", run_at=later))
    b = await server.ok("POST", "/api/jobs", open_url_job(title="b", depends_on=[a["id"]]))
    c = await server.ok("POST", "/api/jobs", open_url_job(title="c", depends_on=[b["id"]]))
    for deps in ([c["id"]], [a["id"]]):  # a -> c -> b -> a, and a -> a
        target = a["id"]
        status, body = await server.request("PATCH", f"/api/jobs/{target}", json={"depends_on": deps})
        assert status == 422, body
        assert body["error"]["details"][0]["field"] == "depends_on" and "cycle" in body["error"]["details"][0][
            "message"]
    assert (await job(server, a["id"]))["depends_on"] == []
    edited = await server.ok("PATCH", f"/api/jobs/{c['id']}", {"depends_on": [a["id"]]})
    assert edited["depends_on"] == [a["id"]]


# ------------------------------------------------------------------ requeue and dead letters


async def test_dead_letters_are_listed_and_requeue_all_runs_every_slot_again(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 3)
    created = await server.ok("POST", "/api/jobs", open_url_job(max_retries=0))
    await agent.wait_for(lambda: len(of_job(agent, created["id"])) == 3)
    ids = of_job(agent, created["id"])
    await agent.finish(ids[:2])
    await agent.finish(ids[2:], "failed", error="launch failed: activity not found", error_code="step_failed")
    done = await status_is(server, created["id"], "completed")
    assert (done["completed_count"], done["failed_count"]) == (2, 1)

    dead = await server.ok("GET", "/api/assignments?status=failed")
    assert [a["id"] for a in dead["items"]] == ids[2:]
    assert dead["items"][0]["error"] == "launch failed: activity not found" and not dead["items"][0]["retried"]

    again = await server.ok("POST", f"/api/jobs/{created['id']}/requeue", {"scope": "all"}, expect=200)
    assert again["requeued"] == 3
    assert (again["job"]["completed_count"], again["job"]["failed_count"]) == (0, 0)
    await agent.wait_for(lambda: len(of_job(agent, created["id"])) == 6)
    assert {agent.orders[i]["serial"] for i in of_job(agent, created["id"])[3:]} == {
        agent.orders[i]["serial"] for i in ids}, "the same phones run it again"
    await agent.finish(of_job(agent, created["id"])[3:])
    final = await status_is(server, created["id"], "completed")
    assert (final["completed_count"], final["failed_count"]) == (3, 0)
    history = await server.ok("GET", f"/api/jobs/{created['id']}/assignments")
    assert sum(a["superseded"] for a in history["items"]) == 3


async def test_requeue_of_a_job_without_failures_changes_nothing_and_of_a_cancelled_one_conflicts(
        server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    created = await server.ok("POST", "/api/jobs", open_url_job())
    await finish_job(agent, created["id"], 1)
    await status_is(server, created["id"], "completed")
    status, body = await server.request("POST", f"/api/jobs/{created['id']}/requeue")
    assert status == 200 and body["requeued"] == 0 and body["job"]["status"] == "completed"
    other = await server.ok("POST", "/api/jobs", open_url_job())
    await server.ok("PATCH", f"/api/jobs/{other['id']}", {"status": "cancelled"})
    status, body = await server.request("POST", f"/api/jobs/{other['id']}/requeue", json={"scope": "all"})
    assert status == 409 and "cancelled" in body["error"]["message"]
    status, body = await server.request("POST", f"/api/jobs/{other['id']}/requeue", json={"scope": "some"})
    assert status == 422 and body["error"]["details"][0]["field"] == "scope"


# ------------------------------------------------------------------ batch control


async def test_batch_pause_reaches_agents_and_reports_what_could_not_change(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    one = await server.ok("POST", "/api/jobs", open_url_job(title="one"))
    two = await server.ok("POST", "/api/jobs", open_url_job(title="two"))
    await agent.wait_for(lambda: len(agent.orders) == 2)
    done = await server.ok("POST", "/api/jobs", open_url_job(title="nothing", filters={"tags": ["none"]}))
    assert done["status"] == "completed"
    result = await server.ok("POST", "/api/jobs/batch",
                             {"action": "pause", "ids": [one["id"], two["id"], done["id"], 999999]}, expect=200)
    assert result["changed"] == [one["id"], two["id"]]
    assert [(f["id"], f["code"]) for f in result["failed"]] == [(done["id"], "conflict"), (999999, "not_found")]
    await agent.wait_for(lambda: len(agent.events("job:paused")) >= 1)
    assert {(await job(server, i))["status"] for i in (one["id"], two["id"])} == {"paused"}

    resumed = await server.ok("POST", "/api/jobs/batch", {"action": "resume", "filter": {"status": ["paused"]}},
                              expect=200)
    assert sorted(resumed["changed"]) == [one["id"], two["id"]] and resumed["failed"] == []
    cancelled = await server.ok("POST", "/api/jobs/batch", {"action": "cancel", "filter": {"search": "one"}},
                                expect=200)
    assert cancelled["changed"] == [one["id"]]
    await agent.wait_for(lambda: len(agent.events("job:cancelled")) >= 1)


async def test_batch_needs_exactly_one_selector(server: RunningServer) -> None:
    for body in ({"action": "pause"}, {"action": "pause", "ids": [1], "filter": {}}):
        status, answer = await server.request("POST", "/api/jobs/batch", json=body)
        assert status == 422 and answer["error"]["details"][0]["field"] == "filter"
    status, answer = await server.request("POST", "/api/jobs/batch", json={"action": "delete", "ids": [1]})
    assert status == 422 and answer["error"]["details"][0]["field"] == "action"


# ------------------------------------------------------------------ concurrency limits


async def test_max_parallel_keeps_at_most_n_phones_on_a_job(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 5)
    created = await server.ok("POST", "/api/jobs", open_url_job(max_parallel=2))
    assert created["max_parallel"] == 2 and created["target_count"] == 5
    job_id = created["id"]
    finished: list[int] = []
    for total in (2, 3, 4, 5):
        await agent.wait_for(lambda total=total: len(of_job(agent, job_id)) == total)  # type: ignore[misc]
        await server.services.distributor.fill()  # an extra pass claims nothing more
        assert len(of_job(agent, job_id)) == total
        running = [i for i in of_job(agent, job_id) if i not in finished]
        assert len(running) == 2, running
        await agent.finish(running[:1])
        finished.append(running[0])
    await agent.finish([i for i in of_job(agent, job_id) if i not in finished])
    done = await status_is(server, job_id, "completed")
    assert done["completed_count"] == 5
    raised = await server.ok("PATCH", f"/api/jobs/{job_id}", {"max_parallel": None})
    assert raised["max_parallel"] is None


async def test_agent_max_running_caps_phones_busy_across_jobs(server: RunningServer) -> None:
    capped = await server.sim_agent("usb-hub", 4)
    free = await server.sim_agent("other", 1)
    agent_id = next(a["id"] for a in await server.ok("GET", "/api/agents") if a["name"] == "usb-hub")
    limited = await server.ok("PATCH", f"/api/agents/{agent_id}", {"max_running": 2})
    assert limited["max_running"] == 2
    first = await server.ok("POST", "/api/jobs", open_url_job(title="first"))
    second = await server.ok("POST", "/api/jobs", open_url_job(title="second"))
    await free.wait_for(lambda: len(free.orders) == 1)
    await capped.wait_for(lambda: len(capped.orders) == 2)
    assert {o["job_id"] for o in capped.orders.values()} == {first["id"]}, "highest priority, then oldest"
    await capped.finish(sorted(capped.orders))
    await capped.wait_for(lambda: len(capped.orders) == 4)
    assert len(capped.orders) == 4
    await server.ok("PATCH", f"/api/agents/{agent_id}", {"max_running": None})
    await capped.finish(sorted(capped.orders)[2:])
    await capped.wait_for(lambda: len(capped.orders) == 8)
    status, body = await server.request("PATCH", f"/api/agents/{agent_id}", json={"max_running": 0})
    assert status == 422 and body["error"]["details"][0]["field"] == "max_running"
    assert second["status"] == "active"


# ------------------------------------------------------------------ the distribution switch


async def test_stopped_scheduler_makes_no_assignments_while_running_work_finishes(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    dash = SimDashboard(server.url, ADMIN)
    await dash.connect()
    try:
        running = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1))
        await agent.wait_for(lambda: len(agent.orders) == 1)
        await agent.start(of_job(agent, running["id"]))

        stopped = await server.ok("POST", "/api/scheduler/stop", expect=200)
        assert stopped["running"] is False and stopped["changed_by"] == "admin"
        await dash.wait_for(lambda: any(not e["running"] for e in dash.events("scheduler:update")))
        waiting = await server.ok("POST", "/api/jobs", open_url_job(title="waits"))
        assert waiting["status"] == "active" and waiting["assigned_count"] == 0
        await agent.finish(of_job(agent, running["id"]))
        await status_is(server, running["id"], "completed")
        await server.services.distributor.fill()
        assert of_job(agent, waiting["id"]) == [] and (await job(server, waiting["id"]))["assigned_count"] == 0
        status = await server.ok("GET", "/api/scheduler")
        assert status["running"] is False and status["jobs"]["active"] == 1 and status["idle_devices"] == 2

        started = await server.ok("POST", "/api/scheduler/start", expect=200)
        assert started["running"] is True
        await agent.wait_for(lambda: len(of_job(agent, waiting["id"])) == 2)
    finally:
        await dash.disconnect()


async def test_a_new_job_never_takes_a_phone_a_waiting_higher_priority_job_could_use(
        server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    blocker = await server.ok("POST", "/api/jobs", open_url_job(title="blocker"))
    high = await server.ok("POST", "/api/jobs", open_url_job(title="high", priority=10, target_type="device_count",
                                                             target_value=1))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    await server.ok("POST", "/api/scheduler/stop", expect=200)
    await agent.finish(of_job(agent, blocker["id"]))
    await status_is(server, blocker["id"], "completed")
    async with server.services.pool.acquire() as conn:  # switch back on without the fill a start makes
        await conn.execute("UPDATE scheduler_state SET running = true")
    low = await server.ok("POST", "/api/jobs", open_url_job(title="low", priority=1, target_type="device_count",
                                                            target_value=1))
    await agent.wait_for(lambda: len(agent.orders) == 2)
    assert agent.orders[max(agent.orders)]["job_id"] == high["id"]
    assert (await job(server, low["id"]))["assigned_count"] == 0


async def test_server_detects_a_timeout_retries_on_another_phone_and_keeps_the_dead_letter(
        server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    created = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1,
                                                                timeout_sec=1, max_retries=1))
    await agent.wait_for(lambda: len(of_job(agent, created["id"])) == 1)
    await agent.start(of_job(agent, created["id"]))  # ... and never reports back: the server ends it
    await agent.wait_for(lambda: len(of_job(agent, created["id"])) == 2)
    first, second = of_job(agent, created["id"])
    assert agent.orders[first]["serial"] != agent.orders[second]["serial"], "the retry goes to another phone"
    await agent.start([second])
    done = await status_is(server, created["id"], "completed")
    assert (done["completed_count"], done["failed_count"]) == (0, 1)
    history = {a["id"]: a for a in (await server.ok("GET", f"/api/jobs/{created['id']}/assignments"))["items"]}
    assert [(history[i]["status"], history[i]["retried"]) for i in (first, second)] == [
        ("timed_out", True), ("timed_out", False)]
    assert history[second]["error"] == "timed out (detected by server)"
    dead = await server.ok("GET", "/api/assignments?dead=true")
    assert [a["id"] for a in dead["items"]] == [second]
