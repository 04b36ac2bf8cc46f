"""The PC agent end to end: a real server, the real adb server, virtual phones."""

from typing import Any

from phonefleet.agent.agent import Agent
from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually, open_url_job


async def job_status(server: RunningServer, job_id: int) -> dict[str, Any]:
    body: dict[str, Any] = await server.ok("GET", f"/api/jobs/{job_id}")
    return body


async def phones_registered(server: RunningServer, count: int) -> bool:
    devices = await server.ok("GET", "/api/devices")
    return bool(sum(d["state"] == "idle" for d in devices) >= count)


async def test_job_from_rest_completes_on_every_virtual_phone(server: RunningServer,
                                                              agent_factory: AgentFactory) -> None:
    agent: Agent = await agent_factory("pc", virtual=3)
    await eventually(lambda: phones_registered(server, 3), timeout=20)
    job = await server.ok("POST", "/api/jobs", open_url_job(
        plan=[{"type": "open_url", "url": "https://example.com/", "duration_sec": 0}, {"type": "screenshot"}]))
    assert job["target_count"] == 3

    async def completed() -> bool:
        return bool((await job_status(server, job["id"]))["status"] == "completed")

    await eventually(completed, timeout=30)
    assert agent.fleet is not None
    for phone in agent.fleet.phones:
        assert any("android.intent.action.VIEW" in c and "https://example.com/" in c
                   for c in phone.actions.commands()), phone.actions.commands()
    rows = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
    assert all(r["status"] == "completed" for r in rows)
    assert all(r["result"]["artifacts"][0]["kind"] == "screenshot" for r in rows)


async def test_socket_loss_falls_back_to_polling_then_recovers(server: RunningServer,
                                                               agent_factory: AgentFactory) -> None:
    from tests.proxy import FlakyProxy

    proxy = FlakyProxy(server.url)
    await proxy.start()
    try:
        token = await server.add_agent("pc-flaky")
        agent: Agent = await agent_factory("pc-flaky", virtual=2, token=token, server=proxy.url)
        await eventually(lambda: _mode(agent, "socket"), timeout=20)
        await eventually(lambda: phones_registered(server, 2), timeout=20)

        proxy.block_websockets = True
        await proxy.kill_websockets()
        await eventually(lambda: _polled(agent), timeout=3.5, interval=0.02)  # polling within ~3 s

        job = await server.ok("POST", "/api/jobs", open_url_job(
            plan=[{"type": "open_url", "url": "https://example.com/poll", "duration_sec": 0}]))

        async def completed() -> bool:
            return bool((await job_status(server, job["id"]))["status"] == "completed")

        await eventually(completed, timeout=20)  # delivered and reported over HTTP alone

        proxy.block_websockets = False
        await eventually(lambda: _mode(agent, "socket"), timeout=10)
        polls = agent.link.polls
        second = await server.ok("POST", "/api/jobs", open_url_job(title="over the socket again"))

        async def second_done() -> bool:
            return bool((await job_status(server, second["id"]))["status"] == "completed")

        await eventually(second_done, timeout=20)
        assert agent.link.polls == polls, "polling stopped once the socket was back"
    finally:
        await proxy.stop()


async def _mode(agent: Agent, mode: str) -> bool:
    return agent.link.mode == mode


async def _polled(agent: Agent) -> bool:
    return agent.link.mode == "polling" and agent.link.polls > 0


async def test_agent_declared_max_running_caps_its_phones_on_the_server(server: RunningServer,
                                                                       agent_factory: AgentFactory) -> None:
    await agent_factory("hub", virtual=4, max_running=2)
    (listed,) = await server.ok("GET", "/api/agents")
    assert listed["max_running"] == 2
    job = await server.ok("POST", "/api/jobs", open_url_job(
        plan=[{"type": "open_url", "url": "https://example.com", "duration_sec": 3}]))
    assert job["target_count"] == 4

    async def assigned(n: int) -> bool:
        return bool((await server.ok("GET", f"/api/jobs/{job['id']}"))["assigned_count"] == n)

    await eventually(lambda: assigned(2))
    await server.services.distributor.fill()
    assert await assigned(2), "two phones run; the other two wait for a free place on this PC"

    async def completed() -> bool:
        body = await server.ok("GET", f"/api/jobs/{job['id']}")
        return bool(body["status"] == "completed" and body["completed_count"] == 4)

    await eventually(completed, timeout=30)
