"""Targets, eligibility, late joiners and priorities of the JobDistributor."""

from typing import Any

import pytest

from phonefleet.server import distributor
from phonefleet.sim.agent import SimAgent
from tests.conftest import RunningServer, eventually, open_url_job


async def job_state(server: RunningServer, job_id: int) -> dict[str, Any]:
    body: dict[str, Any] = await server.ok("GET", f"/api/jobs/{job_id}")
    return body


async def test_all_devices_targets_every_connected_phone(server: RunningServer) -> None:
    a = await server.sim_agent("pc-a", 3)
    b = await server.sim_agent("pc-b", 4)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    assert job["target_count"] == 7
    assert job["assigned_count"] == 7
    await a.wait_for(lambda: len(a.orders) == 3)
    await b.wait_for(lambda: len(b.orders) == 4)
    assert len(a.events("job:assign")) == 1, "one batched job:assign per agent"
    order = next(iter(b.orders.values()))
    assert order["plan"][0]["type"] == "open_url"
    assert order["serial"].startswith("pc-b-")


async def test_each_job_travels_once_to_agents_that_take_plans_once_and_whole_to_others(
        server: RunningServer) -> None:
    new = await server.sim_agent("pc-new", 3)
    old = await server.sim_agent("pc-old", 2, plans_once=False)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    await new.wait_for(lambda: len(new.orders) == 3)
    await old.wait_for(lambda: len(old.orders) == 2)
    (compact,) = new.events("job:assign")
    assert set(compact) == {"jobs", "slots"}
    assert [j["job_id"] for j in compact["jobs"]] == [job["id"]], "the plan once, not once per phone"
    assert len(compact["slots"]) == 3 and all("plan" not in slot for slot in compact["slots"])
    (whole,) = old.events("job:assign")
    assert set(whole) == {"assignments"} and all(o["plan"][0]["type"] == "open_url" for o in whole["assignments"])


async def test_a_large_fan_out_is_claimed_and_pushed_in_chunks(server: RunningServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``CLAIM_CHUNK`` phones (on a node with many agents) a job is claimed in several statements, each chunk
    pushed while the next is claimed: every phone still gets exactly one order, the job's counters add up, and a
    second job that fits its room exactly is not over-assigned across the chunks."""
    monkeypatch.setattr(distributor, "CLAIM_CHUNK", 3)
    monkeypatch.setattr(distributor, "CHUNKED_FROM_AGENTS", 2)
    a = await server.sim_agent("pc-a", 5)
    b = await server.sim_agent("pc-b", 6)
    job = await server.ok("POST", "/api/jobs", open_url_job())
    assert (job["target_count"], job["assigned_count"]) == (11, 11)
    await a.wait_for(lambda: len(a.orders) == 5)
    await b.wait_for(lambda: len(b.orders) == 6)
    assert len({o["device_id"] for o in [*a.orders.values(), *b.orders.values()]}) == 11
    assert len(a.events("job:assign")) + len(b.events("job:assign")) > 2, "pushed in more than one batch"
    await a.finish(sorted(a.orders))
    await b.finish(sorted(b.orders))
    counted = await server.ok("POST", "/api/jobs", open_url_job(title="seven", target_type="device_count",
                                                                 target_value=7))
    assert counted["assigned_count"] == 7

    async def seven() -> bool:
        return bool(sum(o["job_id"] == counted["id"] for o in [*a.orders.values(), *b.orders.values()]) == 7)

    await eventually(seven)
    assert (await job_state(server, counted["id"]))["assigned_count"] == 7


@pytest.mark.parametrize(("phones", "percent", "expected"), [(10, 50, 5), (10, 25, 3), (3, 1, 1), (10, 100, 10)])
async def test_percentage_target_is_ceiling_of_connected_phones(
    server: RunningServer, phones: int, percent: int, expected: int
) -> None:
    agent = await server.sim_agent("pc", phones)
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="percentage", target_value=percent))
    assert job["target_count"] == expected
    await agent.wait_for(lambda: len(agent.orders) == expected)


async def test_device_count_fills_late_joiners_until_reached(server: RunningServer) -> None:
    first = await server.sim_agent("pc-1", 2)
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=5))
    assert job["target_count"] == 5
    assert job["assigned_count"] == 2
    await first.wait_for(lambda: len(first.orders) == 2)
    late = await server.sim_agent("pc-2", 4)
    await late.wait_for(lambda: len(late.orders) == 3)

    async def five_assigned() -> bool:
        return bool((await job_state(server, job["id"]))["assigned_count"] == 5)

    await eventually(five_assigned)
    assert len(late.orders) == 3, "never more than the target"


async def test_one_run_per_phone_per_job(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=4))
    await agent.wait_for(lambda: len(agent.orders) == 2)
    ids = sorted(agent.orders)
    await agent.finish(ids)
    # The phones are idle again, but they already ran this job: they must not get it twice.
    other = await server.ok("POST", "/api/jobs", open_url_job(title="other"))
    await agent.wait_for(lambda: any(o["job_id"] == other["id"] for o in agent.orders.values()))
    state = await job_state(server, job["id"])
    assert state["assigned_count"] == 2
    assert state["status"] == "active"
    assert sorted(o["job_id"] for o in agent.orders.values()).count(job["id"]) == 2


async def test_busy_phones_take_the_job_when_they_become_idle(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    first = await server.ok("POST", "/api/jobs", open_url_job(title="first"))
    second = await server.ok("POST", "/api/jobs", open_url_job(title="second"))
    assert second["target_count"] == 2 and second["assigned_count"] == 0
    await agent.wait_for(lambda: len(agent.orders) == 2)
    await agent.finish(sorted(agent.orders))
    await agent.wait_for(lambda: len(agent.orders) == 4)
    assert (await job_state(server, first["id"]))["status"] == "completed"


async def test_higher_priority_job_is_served_first(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    blocker = await server.ok("POST", "/api/jobs", open_url_job(title="blocker"))
    low = await server.ok("POST", "/api/jobs", open_url_job(title="low", priority=1,
                                                            target_type="device_count", target_value=1))
    high = await server.ok("POST", "/api/jobs", open_url_job(title="high", priority=10,
                                                             target_type="device_count", target_value=1))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    await agent.finish([o for o, v in agent.orders.items() if v["job_id"] == blocker["id"]])
    await agent.wait_for(lambda: len(agent.orders) == 2)
    newest = max(agent.orders)
    assert agent.orders[newest]["job_id"] == high["id"]
    assert (await job_state(server, low["id"]))["assigned_count"] == 0


async def test_filters_limit_which_phones_are_eligible(server: RunningServer) -> None:
    token = await server.add_agent("pc")
    serials = ["p-1", "p-2", "s-1"]
    agent = SimAgent(server.url, token, serials, models={"p-1": "Pixel 8", "p-2": "Pixel 8", "s-1": "Galaxy S24"})
    await agent.connect()
    job = await server.ok("POST", "/api/jobs", open_url_job(filters={"models": ["Galaxy S24"]}))
    assert job["target_count"] == 1
    await agent.wait_for(lambda: len(agent.orders) == 1)
    assert next(iter(agent.orders.values()))["serial"] == "s-1"
    await agent.disconnect()


async def test_paused_and_unhealthy_phones_get_no_work(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 3)
    await agent.call("device:update", {"devices": [{"serial": "pc-001", "healthy": False,
                                                    "health_reason": "battery 3%"}]})
    await agent.pause("device", serial="pc-002")
    job = await server.ok("POST", "/api/jobs", open_url_job())
    assert job["target_count"] == 1
    await agent.wait_for(lambda: len(agent.orders) == 1)
    assert next(iter(agent.orders.values()))["serial"] == "pc-000"
    devices = {d["serial"]: d for d in await server.ok("GET", "/api/devices")}
    assert devices["pc-001"]["state"] == "unhealthy"
    assert devices["pc-002"]["state"] == "paused"
    assert devices["pc-002"]["paused_by"] == "agent"


async def test_all_devices_with_no_phones_completes_at_once(server: RunningServer) -> None:
    job = await server.ok("POST", "/api/jobs", open_url_job())
    assert job["target_count"] == 0
    assert job["status"] == "completed"
