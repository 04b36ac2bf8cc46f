"""Pause, resume, cancel and delete, in both directions."""

from typing import Any

from phonefleet.sim.agent import SimDashboard
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job


async def statuses(server: RunningServer, job_id: int) -> list[str]:
    body = await server.ok("GET", f"/api/jobs/{job_id}/assignments")
    return sorted(a["status"] for a in body["items"])


async def dashboard(server: RunningServer) -> SimDashboard:
    dash = SimDashboard(server.url, ADMIN)
    await dash.connect()
    return dash


async def test_pause_from_rest_reaches_agents_and_resume_brings_work_back(server: RunningServer) -> None:
    a = await server.sim_agent("pc-a", 2)
    b = await server.sim_agent("pc-b", 2)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await a.wait_for(lambda: len(a.orders) == 2)
    await b.wait_for(lambda: len(b.orders) == 2)
    running = min(a.orders)
    await a.start([running])

    paused = await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "paused"})
    assert paused["status"] == "paused"
    await a.wait_for(lambda: len(a.events("job:paused")) == 1)
    await b.wait_for(lambda: len(b.events("job:paused")) == 1)
    assert a.events("job:paused")[0]["assignment_ids"] == [max(a.orders)], "the running one goes on"
    assert sorted(b.events("job:paused")[0]["assignment_ids"]) == sorted(b.orders)
    assert await statuses(server, job["id"]) == ["paused", "paused", "paused", "running"]
    assert paused["paused_count"] == 3 and paused["running_count"] == 1

    resumed = await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "active"})
    assert resumed["status"] == "active"
    await b.wait_for(lambda: len(b.events("job:resumed")) == 1 and len(b.events("job:assign")) == 2)
    await a.wait_for(lambda: len(a.events("job:resumed")) == 1 and len(a.events("job:assign")) == 2)

    async def redelivered() -> bool:
        return await statuses(server, job["id"]) == ["delivered", "delivered", "delivered", "running"]

    await eventually(redelivered)
    await a.finish(sorted(a.orders))
    await b.finish(sorted(b.orders))
    assert (await server.ok("GET", f"/api/jobs/{job['id']}"))["status"] == "completed"


async def test_paused_job_frees_its_phones_for_other_jobs(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    first = await server.ok("POST", "/api/jobs", open_url_job(title="first"))
    await agent.wait_for(lambda: len(agent.orders) == 2)
    await server.ok("PATCH", f"/api/jobs/{first['id']}", {"status": "paused"})
    second = await server.ok("POST", "/api/jobs", open_url_job(title="second"))
    await agent.wait_for(lambda: len(agent.orders) == 4)
    assert {o["job_id"] for o in agent.orders.values()} == {first["id"], second["id"]}


async def test_cancel_from_rest_ends_open_assignments_on_agents(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 3)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) == 3)
    await agent.start([min(agent.orders)])
    cancelled = await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "cancelled"})
    assert cancelled["status"] == "cancelled"
    await agent.wait_for(lambda: len(agent.events("job:cancelled")) == 1)
    control = agent.events("job:cancelled")[0]
    assert sorted(control["assignment_ids"]) == sorted(agent.orders)
    assert control["abort_running"] is True
    assert await statuses(server, job["id"]) == ["cancelled"] * 3
    # A late report for a cancelled assignment is acknowledged and changes nothing.
    ack = await agent.finish([min(agent.orders)])
    assert ack["ok"] and ack["data"]["recorded"] == []
    devices = await server.ok("GET", "/api/devices")
    assert {d["state"] for d in devices} == {"idle"}


async def test_delete_cancels_on_phones_and_removes_the_job(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    dash = await dashboard(server)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) == 2)
    status, _ = await server.request("DELETE", f"/api/jobs/{job['id']}")
    assert status == 204
    await agent.wait_for(lambda: len(agent.events("job:cancelled")) == 1)
    status, body = await server.request("GET", f"/api/jobs/{job['id']}")
    assert status == 404 and body["error"]["code"] == "not_found"
    await dash.wait_for(lambda: any(d["job_id"] == job["id"] for d in dash.events("job:deleted")))
    await dash.disconnect()
    async with server.services.pool.acquire() as conn:  # its runs go with it (a trigger, not a foreign key)
        assert await conn.fetchval("SELECT count(*) FROM assignments WHERE job_id = $1", job["id"]) == 0


async def test_resume_of_a_cancelled_job_is_a_conflict(server: RunningServer) -> None:
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1))
    await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "cancelled"})
    status, body = await server.request("PATCH", f"/api/jobs/{job['id']}", json={"status": "active"})
    assert status == 409
    assert body["error"]["code"] == "conflict"


async def test_pause_from_agent_reaches_dashboard_and_hands_back_work(server: RunningServer) -> None:
    dash = await dashboard(server)
    a = await server.sim_agent("pc-a", 2)
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=2))
    await a.wait_for(lambda: len(a.orders) == 2)

    ack = await a.pause("agent")
    assert ack["ok"], ack
    assert sorted(ack["data"]["handed_back"]) == sorted(a.orders)
    await dash.wait_for(lambda: any(p["paused"] and p["scope"] == "agent" and p["agent_name"] == "pc-a"
                                    for p in dash.events("pause:changed")))
    await dash.wait_for(lambda: any(d["state"] == "paused" for u in dash.events("device:update")
                                    for d in u["devices"]))
    state = await server.ok("GET", f"/api/jobs/{job['id']}")
    assert state["assigned_count"] == 0, "the slots went back to the job"

    b = await server.sim_agent("pc-b", 2)
    await b.wait_for(lambda: len(b.orders) == 2)

    await a.pause("agent", resume=True)
    await dash.wait_for(lambda: any(not p["paused"] for p in dash.events("pause:changed")))
    devices = {d["serial"]: d for d in await server.ok("GET", "/api/devices")}
    assert devices["pc-a-000"]["state"] == "idle"
    await dash.disconnect()


async def test_agent_pauses_one_job_only_on_its_phones(server: RunningServer) -> None:
    a = await server.sim_agent("pc-a", 1)
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=2))
    await a.wait_for(lambda: len(a.orders) == 1)
    ack = await a.pause("job", job_id=job["id"])
    assert ack["ok"] and len(ack["data"]["handed_back"]) == 1
    other = await server.ok("POST", "/api/jobs", open_url_job(title="other"))
    await a.wait_for(lambda: any(o["job_id"] == other["id"] for o in a.orders.values()))
    b = await server.sim_agent("pc-b", 2)
    await b.wait_for(lambda: sum(o["job_id"] == job["id"] for o in b.orders.values()) == 2)


async def test_server_side_device_pause_reaches_the_agent(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    devices = await server.ok("GET", "/api/devices")
    target = next(d for d in devices if d["serial"] == "pc-000")
    body = await server.ok("PATCH", f"/api/devices/{target['id']}", {"paused": True})
    assert body["state"] == "paused" and body["paused_by"] == "server"
    await agent.wait_for(lambda: len(agent.events("device:pause")) == 1)
    assert agent.events("device:pause")[0]["serial"] == "pc-000"
    job = await server.ok("POST", "/api/jobs", open_url_job())
    assert job["target_count"] == 1
    await agent.wait_for(lambda: len(agent.orders) == 1)
    assert next(iter(agent.orders.values()))["serial"] == "pc-001"
    body = await server.ok("PATCH", f"/api/devices/{target['id']}", {"paused": False})
    assert body["state"] == "idle"
    await agent.wait_for(lambda: len(agent.events("device:resume")) == 1)


async def test_dashboard_sees_progress_and_completion(server: RunningServer) -> None:
    dash = await dashboard(server)
    agent = await server.sim_agent("pc", 3)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) == 3)
    ids = sorted(agent.orders)
    await agent.start(ids)
    await agent.call("assignment:progress", {"items": [
        {"assignment_id": i, "step_index": 0, "step_count": 1, "progress": 0.5} for i in ids]})
    await agent.finish(ids)

    def completed(update: dict[str, Any]) -> bool:
        return bool(update["job_id"] == job["id"] and update["status"] == "completed"
                    and update["completed_count"] == 3)

    await dash.wait_for(lambda: any(completed(u) for u in dash.events("job:status:update")))
    await dash.wait_for(lambda: len(dash.events("fleet:stats")) > 0)
    assert dash.events("fleet:stats")[-1]["connected_devices"] == 3
    await dash.disconnect()


async def test_progress_events_are_throttled_per_job(server: RunningServer) -> None:
    dash = await dashboard(server)
    agent = await server.sim_agent("pc", 1)
    await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) == 1)
    (aid,) = agent.orders
    await agent.start([aid])
    for i in range(100):
        await agent.call("assignment:progress", {"items": [
            {"assignment_id": aid, "step_index": 0, "step_count": 1, "progress": i / 100}]})
    await dash.wait_for(lambda: len(dash.events("job:progress")) > 0)
    # The test server flushes at 20 Hz; 100 reports must collapse into far fewer pushes.
    assert len(dash.events("job:progress")) < 50
    await dash.disconnect()

