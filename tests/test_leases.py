"""Leases, retries, re-delivery and the polling fallback: nothing is lost when a link or a PC fails."""

import asyncio
from typing import Any

import aiohttp

from phonefleet.sim.agent import AgentHttp, SimAgent
from tests.conftest import RunningServer, eventually, open_url_job


async def assignments(server: RunningServer, job_id: int) -> list[dict[str, Any]]:
    body = await server.ok("GET", f"/api/jobs/{job_id}/assignments")
    items: list[dict[str, Any]] = body["items"]
    return items


async def test_gone_agent_loses_its_work_and_the_slot_retries_on_another_phone(server: RunningServer) -> None:
    doomed = await server.sim_agent("pc-doomed", 1)
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1,
                                                            max_retries=2))
    await doomed.wait_for(lambda: len(doomed.orders) == 1)
    await doomed.start(sorted(doomed.orders))
    survivor = await server.sim_agent("pc-survivor", 1)
    await doomed.disconnect()  # and never comes back: no heartbeat, no polling

    await survivor.wait_for(lambda: len(survivor.orders) == 1, timeout=15)
    retry = next(iter(survivor.orders.values()))
    assert retry["job_id"] == job["id"] and retry["attempt"] == 2
    rows = {a["serial"]: a for a in await assignments(server, job["id"])}
    assert rows["pc-doomed-000"]["status"] == "failed"
    assert rows["pc-doomed-000"]["error_code"] == "lost"
    devices = {d["serial"]: d for d in await server.ok("GET", "/api/devices")}
    assert devices["pc-doomed-000"]["state"] == "offline"

    await survivor.finish([retry["assignment_id"]])
    done = await server.ok("GET", f"/api/jobs/{job['id']}")
    assert done["status"] == "completed"
    assert done["completed_count"] == 1 and done["failed_count"] == 0


async def test_retryable_failure_backs_off_then_moves_to_another_phone(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1,
                                                            max_retries=1))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    first = next(iter(agent.orders.values()))
    await agent.finish([first["assignment_id"]], outcome="failed", error="adb: device offline")
    await agent.wait_for(lambda: len(agent.orders) == 2, timeout=10)
    second = agent.orders[max(agent.orders)]
    assert second["serial"] != first["serial"] and second["attempt"] == 2
    await agent.finish([second["assignment_id"]], outcome="failed", error="again")
    done = await server.ok("GET", f"/api/jobs/{job['id']}")
    assert done["status"] == "completed"
    assert done["failed_count"] == 1 and done["completed_count"] == 0


async def test_retry_goes_back_to_a_phone_that_ran_it_when_no_other_is_eligible(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    job = await server.ok("POST", "/api/jobs", open_url_job(max_retries=2))  # both phones run it
    await agent.wait_for(lambda: len(agent.orders) == 2)
    first, other = sorted(agent.orders)
    await agent.finish([first], outcome="failed", error="adb: device offline")
    await agent.wait_for(lambda: len(agent.orders) == 3, timeout=10)
    retry = agent.orders[max(agent.orders)]
    assert retry["serial"] == agent.orders[first]["serial"] and retry["attempt"] == 2
    await agent.finish([other, retry["assignment_id"]])
    done = await server.ok("GET", f"/api/jobs/{job['id']}")
    assert (done["status"], done["completed_count"], done["failed_count"]) == ("completed", 2, 0)
    history = {a["id"]: a for a in (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]}
    assert (history[first]["retried"], history[first]["superseded"]) == (True, True)


async def test_retry_waits_for_a_busy_phone_that_never_ran_it(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    blocker = await server.ok("POST", "/api/jobs", open_url_job(title="blocker", target_type="device_count",
                                                                target_value=1))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    busy_serial = next(iter(agent.orders.values()))["serial"]
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1,
                                                            max_retries=1))
    await agent.wait_for(lambda: len(agent.orders) == 2)
    failed = max(agent.orders)
    await agent.finish([failed], outcome="failed", error="flaky")

    async def retry_due() -> bool:
        async with server.services.pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT retry_at <= now() FROM assignments WHERE id = $1", failed))

    await eventually(retry_due)
    await server.services.distributor.fill()
    assert len(agent.orders) == 2, "the failed phone is idle, but a phone that never ran the job exists"
    await agent.finish([i for i, o in agent.orders.items() if o["job_id"] == blocker["id"]])
    await agent.wait_for(lambda: len(agent.orders) == 3, timeout=10)
    assert agent.orders[max(agent.orders)]["serial"] == busy_serial
    assert agent.orders[max(agent.orders)]["job_id"] == job["id"]


async def test_non_retryable_failure_ends_the_slot_at_once(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1,
                                                            max_retries=5))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    await agent.finish(sorted(agent.orders), outcome="failed", error="unknown step", error_code="unknown_step",
                       retryable=False)
    done = await server.ok("GET", f"/api/jobs/{job['id']}")
    assert done["status"] == "completed" and done["failed_count"] == 1
    failed = await server.ok("GET", "/api/assignments?status=failed")
    assert failed["items"][0]["error"] == "unknown step"


async def test_heartbeats_keep_a_running_lease_alive(server_factory: Any) -> None:
    server: RunningServer = await server_factory(lease_sec=0.6, agent_grace_sec=30)
    agent = await server.sim_agent("pc", 1)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) == 1)
    await agent.start(sorted(agent.orders))
    before = (await assignments(server, job["id"]))[0]["lease_until"]
    for _ in range(8):  # heartbeats over several leases' worth of time: the lease keeps moving on
        assert (await agent.call("agent:heartbeat", {"running": sorted(agent.orders)}))["ok"]
        row = (await assignments(server, job["id"]))[0]
        assert row["status"] == "running"
        assert row["lease_until"] >= before
        before = row["lease_until"]
        await eventually(lambda previous=before: _lease_extended(server, job["id"], previous),  # type: ignore[misc]
                         timeout=2)


async def test_heartbeats_arriving_together_each_get_their_own_answer(server_factory: Any) -> None:
    """Heartbeats are batched into shared statements: every agent's running lease still moves on, and only the
    agent the server had given up on is told to say hello again."""
    server: RunningServer = await server_factory(lease_sec=30, agent_grace_sec=30)
    agents = [await server.sim_agent(f"pc-{i}", 1) for i in range(4)]
    job = await server.ok("POST", "/api/jobs", open_url_job())
    for agent in agents:
        await agent.wait_for(lambda a=agent: len(a.orders) == 1)  # type: ignore[misc]
        await agent.start(sorted(agent.orders))
    async with server.services.pool.acquire() as conn:
        await conn.execute("UPDATE assignments SET lease_until = now() WHERE job_id = $1", job["id"])
        await conn.execute("UPDATE agents SET status = 'offline' WHERE name = 'pc-2'")
    answers = await asyncio.gather(*(a.call("agent:heartbeat", {"running": sorted(a.orders)}) for a in agents))
    assert [a["data"]["hello_required"] for a in answers] == [False, False, True, False]
    rows = await assignments(server, job["id"])
    assert len(rows) == 4 and all(r["status"] == "running" for r in rows)
    async with server.services.pool.acquire() as conn:
        extended = await conn.fetchval("SELECT count(*) FROM assignments WHERE job_id = $1 AND "
                                       "lease_until > now() + interval '20 seconds'", job["id"])
        online = await conn.fetchval("SELECT count(*) FROM agents WHERE status = 'online'")
    assert (extended, online) == (4, 4)


async def _lease_extended(server: RunningServer, job_id: int, previous: str) -> bool:
    """True once the lease has moved past ``previous`` (the agent heartbeats meanwhile)."""
    rows = await assignments(server, job_id)
    return bool(rows[0]["status"] == "running" and rows[0]["lease_until"] > previous)


async def test_lapsed_lease_ends_running_work_as_lost(server_factory: Any) -> None:
    server: RunningServer = await server_factory(lease_sec=0.3, agent_grace_sec=30)
    agent = await server.sim_agent("pc", 1)
    job = await server.ok("POST", "/api/jobs", open_url_job(max_retries=0))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    await agent.start(sorted(agent.orders))

    async def lost() -> bool:
        rows = await assignments(server, job["id"])
        return bool(rows[0]["status"] == "failed" and rows[0]["error_code"] == "lost")

    await eventually(lost)
    assert (await server.ok("GET", f"/api/jobs/{job['id']}"))["failed_count"] == 1


async def test_unacknowledged_assignments_are_resent_on_reconnect(server: RunningServer) -> None:
    token = await server.add_agent("pc")
    deaf = SimAgent(server.url, token, ["p-1", "p-2"], auto_ack=False)
    server.clients.append(deaf)
    await deaf.connect()
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await deaf.wait_for(lambda: len(deaf.orders) == 2)
    assert await _statuses(server, job["id"]) == ["pending", "pending"]
    await deaf.disconnect()

    again = SimAgent(server.url, token, ["p-1", "p-2"])
    server.clients.append(again)
    ack = await again.connect()
    assert ack is not None
    assert sorted(o["assignment_id"] for o in ack["data"]["assignments"]) == sorted(deaf.orders)
    assert await _statuses(server, job["id"]) == ["delivered", "delivered"]


async def test_job_assign_ack_marks_delivered(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) == 2)

    async def delivered() -> bool:
        return await _statuses(server, job["id"]) == ["delivered", "delivered"]

    await eventually(delivered)


async def _statuses(server: RunningServer, job_id: int) -> list[str]:
    return sorted(a["status"] for a in await assignments(server, job_id))


async def test_polling_endpoints_alone_complete_a_job(server: RunningServer) -> None:
    token = await server.add_agent("pc-poll")
    async with aiohttp.ClientSession() as session:
        http = AgentHttp(session, server.url, token)
        devices = [{"serial": f"poll-{i}", "model": "Pixel 6", "android_version": "13"} for i in range(3)]
        (hello,) = await http.send([("agent:hello", {"devices": devices})])
        assert hello["ok"], hello
        job = await server.ok("POST", "/api/jobs", open_url_job())
        assert job["target_count"] == 3

        poll = await http.poll()
        ids = sorted(o["assignment_id"] for o in poll["assignments"])
        assert len(ids) == 3 and poll["poll_sec"] == 3.0
        assert await _statuses(server, job["id"]) == ["delivered"] * 3
        results = await http.send([
            ("assignment:started", {"items": [{"assignment_id": i} for i in ids]}),
            ("assignment:progress", {"items": [{"assignment_id": i, "step_index": 0, "step_count": 1,
                                                "progress": 0.5} for i in ids]}),
            ("assignment:finished", {"results": [{"assignment_id": i, "outcome": "completed",
                                                  "result": {"screenshots": 0}} for i in ids]}),
        ])
        assert all(r["ok"] for r in results), results
        # Replaying the same batch (an outbox after a lost response) records nothing twice.
        (replay,) = await http.send([("assignment:finished", {"results": [
            {"assignment_id": i, "outcome": "completed"} for i in ids]})])
        assert replay["ok"] and replay["data"]["recorded"] == []
        assert (await http.poll())["assignments"] == []
    done = await server.ok("GET", f"/api/jobs/{job['id']}")
    assert done["status"] == "completed" and done["completed_count"] == 3
