"""A backlog of jobs waiting for phones that are not there costs nothing: they are marked starved and
skipped by fill passes, and freed the moment a phone they may run on connects, or by the sweep."""

from typing import Any

from tests.conftest import RunningServer, eventually, open_url_job


async def starved(server: RunningServer, job_id: int) -> bool:
    return bool(await server.services.pool.fetchval("SELECT starved FROM jobs WHERE id = $1", job_id))


async def job(server: RunningServer, job_id: int) -> dict[str, Any]:
    body: dict[str, Any] = await server.ok("GET", f"/api/jobs/{job_id}")
    return body


async def test_a_job_for_phones_that_are_not_there_waits_starved_and_takes_one_when_it_connects(
        server: RunningServer) -> None:
    await server.sim_agent("lab-a", 2)
    waiting = await server.ok("POST", "/api/jobs", open_url_job(
        target_type="device_count", target_value=1, filters={"models": ["Nokia 3310"]}))
    assert waiting["assigned_count"] == 0
    assert await starved(server, waiting["id"]), "no connected phone may run it: its fill said so"
    assert await server.services.distributor.fill() == 0

    lab_b = await server.sim_agent("lab-b", 1, models={"lab-b-000": "Nokia 3310"})
    await lab_b.wait_for(lambda: len(lab_b.orders) == 1, timeout=10)
    assert next(iter(lab_b.orders.values()))["job_id"] == waiting["id"]
    assert not await starved(server, waiting["id"])


async def test_a_phone_busy_elsewhere_keeps_a_job_waiting_not_starved(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    first = await server.ok("POST", "/api/jobs", open_url_job(title="first"))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    second = await server.ok("POST", "/api/jobs", open_url_job(title="second", target_type="device_count",
                                                               target_value=1))
    assert second["assigned_count"] == 0 and not await starved(server, second["id"]), "its phone will come free"
    await agent.finish([o for o, v in agent.orders.items() if v["job_id"] == first["id"]])
    await agent.wait_for(lambda: len(agent.orders) == 2, timeout=10)


async def test_the_sweep_frees_a_job_whose_phone_arrived_unannounced(server: RunningServer) -> None:
    await server.sim_agent("pc", 1)
    await server.ok("POST", "/api/scheduler/stop", expect=200)
    stuck = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1))
    # A phone the job may run on, but the job marked starved as if the event that said so was missed:
    await server.services.pool.execute("UPDATE jobs SET starved = true WHERE id = $1", stuck["id"])
    await server.ok("POST", "/api/scheduler/start", expect=200)
    assert (await job(server, stuck["id"]))["assigned_count"] == 0, "fill passes skip a starved job"

    async def filled() -> bool:
        return bool((await job(server, stuck["id"]))["assigned_count"] == 1)

    await eventually(filled, timeout=20)  # the sweep re-checks starved jobs and frees this one


async def test_lifting_a_job_pause_on_an_agent_frees_the_job(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    await server.ok("POST", "/api/scheduler/stop", expect=200)
    created = await server.ok("POST", "/api/jobs", open_url_job(title="held", target_type="device_count",
                                                                target_value=1))
    await agent.pause("job", job_id=created["id"])  # the only phone may not run it here
    await server.ok("POST", "/api/scheduler/start", expect=200)

    async def waiting_starved() -> bool:
        return await starved(server, created["id"])

    await eventually(waiting_starved, timeout=20)  # the sweep found no phone it may run on
    assert (await job(server, created["id"]))["assigned_count"] == 0
    await agent.pause("job", job_id=created["id"], resume=True)
    await agent.wait_for(lambda: len(agent.orders) == 1, timeout=10)
    assert not await starved(server, created["id"])


async def test_creating_jobs_behind_a_starved_backlog_still_fills_them(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 3, auto_finish=True)
    await server.services.pool.execute(
        """INSERT INTO jobs (title, plan, target_type, target_value, target_count, filters, priority, status,
                             timeout_sec, activated_at, starved)
           SELECT 'lab b ' || g, '[]', 'device_count', 5, 5, '{"tags": ["lab-b"]}', 10, 'active', 60, now(), true
           FROM generate_series(1, 500) AS g""")
    created = [await server.ok("POST", "/api/jobs", open_url_job(title=f"new {i}", target_type="device_count",
                                                                 target_value=1)) for i in range(10)]

    async def all_done() -> bool:
        statuses = [(await job(server, c["id"]))["status"] for c in created]
        return statuses == ["completed"] * len(created)

    await eventually(all_done, timeout=20)
    assert len(agent.orders) == 10
