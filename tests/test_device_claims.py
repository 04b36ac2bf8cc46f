"""One phone, one driver: two agents on one adb server both see every phone, but only the first to claim a
phone may drive it; the other is told so, leaves it alone, and takes it over when the first goes away."""

import logging

import pytest

from phonefleet.agent.agent import Agent
from phonefleet.sim.agent import SimAgent
from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually, open_url_job


async def test_a_second_agent_on_the_same_adb_server_is_refused_its_phones_and_takes_them_over_later(
        server: RunningServer, agent_factory: AgentFactory, caplog: pytest.LogCaptureFixture) -> None:
    first: Agent = await agent_factory("rack-a", virtual=2)
    assert first.fleet is not None
    serials = sorted(p.adb_serial for p in first.fleet.phones)
    with caplog.at_level(logging.WARNING, logger="phonefleet.agent.agent"):
        second: Agent = await agent_factory("rack-b", virtual=0, wait_idle=False)

        async def refused() -> bool:
            return sorted(second.refused) == serials

        await eventually(refused, timeout=15)
    assert set(second.refused.values()) == {"rack-a"}
    warned = [r for r in caplog.records if "already driven by another agent" in r.getMessage()]
    assert sorted(r.__dict__["serial"] for r in warned) == serials, "said once per phone"

    devices = await server.ok("GET", "/api/devices")
    live = [d for d in devices if d["serial"] in serials and d["state"] != "offline"]
    assert sorted((d["serial"], d["agent_name"]) for d in live) == [(s, "rack-a") for s in serials]
    job = await server.ok("POST", "/api/jobs", open_url_job(
        plan=[{"type": "open_url", "url": "https://example.com/one-driver", "duration_sec": 0}]))
    assert job["target_count"] == 2, "each phone counts once"

    async def completed() -> bool:
        return bool((await server.ok("GET", f"/api/jobs/{job['id']}"))["status"] == "completed")

    await eventually(completed, timeout=20)
    rows = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
    assert sorted(r["serial"] for r in rows) == serials and {r["agent_id"] for r in rows} == {live[0]["agent_id"]}
    opened = [c for p in first.fleet.phones for c in p.actions.commands() if "example.com/one-driver" in c]
    assert len(opened) == 2, "each phone ran the job once"

    await first.link.stop()  # the first agent goes away; past its grace the second takes the phones over

    async def taken_over() -> bool:
        devices = await server.ok("GET", "/api/devices")
        return sorted(d["serial"] for d in devices if d["agent_name"] == "rack-b" and d["state"] == "idle") \
            == serials and not second.refused

    await eventually(taken_over, timeout=30)


async def test_two_agents_claiming_one_phone_at_once_leave_it_to_one(server: RunningServer) -> None:
    left = SimAgent(server.url, await server.add_agent("left"), ["shared-phone"])
    right = SimAgent(server.url, await server.add_agent("right"), ["shared-phone"])
    server.clients += [left, right]
    await left.connect(hello=False)
    await right.connect(hello=False)
    import asyncio

    acks = await asyncio.gather(left.hello(), right.hello())
    refused = [a["data"]["refused_devices"] for a in acks]
    assert sorted(len(r) for r in refused) == [0, 1]
    devices = [d for d in await server.ok("GET", "/api/devices") if d["serial"] == "shared-phone"]
    assert [d["state"] for d in devices].count("idle") == 1
    job = await server.ok("POST", "/api/jobs", open_url_job())
    assert job["target_count"] == 1


async def test_emulator_serials_on_different_hosts_are_different_phones(server: RunningServer) -> None:
    here = SimAgent(server.url, await server.add_agent("host-1"), ["emulator-5554"])
    there = SimAgent(server.url, await server.add_agent("host-2"), ["emulator-5554"])
    server.clients += [here, there]
    await here.connect(hello=False)
    ack_here = await here.call("agent:hello", {"hostname": "pc-1", "devices": here.devices()})
    await there.connect(hello=False)
    ack_there = await there.call("agent:hello", {"hostname": "pc-2", "devices": there.devices()})
    assert ack_here["data"]["refused_devices"] == [] and ack_there["data"]["refused_devices"] == []
    same_host = SimAgent(server.url, await server.add_agent("host-1-again"), ["emulator-5554"])
    server.clients.append(same_host)
    await same_host.connect(hello=False)
    ack = await same_host.call("agent:hello", {"hostname": "pc-1", "devices": same_host.devices()})
    assert ack["data"]["refused_devices"] == [{"serial": "emulator-5554", "held_by": "host-1"}]
