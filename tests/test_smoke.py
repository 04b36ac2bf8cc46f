from tests.conftest import RunningServer, eventually, open_url_job


async def test_all_devices_job_reaches_every_phone_and_completes(server: RunningServer) -> None:
    agent = await server.sim_agent("pc1", 5)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    assert job["target_count"] == 5
    await agent.wait_for(lambda: len(agent.orders) == 5)
    ids = sorted(agent.orders)
    await agent.start(ids)
    ack = await agent.finish(ids)
    assert ack["ok"], ack
    done = await server.ok("GET", f"/api/jobs/{job['id']}")
    assert done["status"] == "completed"
    assert done["completed_count"] == 5
    await agent.disconnect()

    async def assignments_all_completed() -> bool:
        items = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
        assert len(items) == 5, items  # all() of an empty list would hold
        return all(a["status"] == "completed" for a in items)

    await eventually(assignments_all_completed)
