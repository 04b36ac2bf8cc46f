"""Virtual phones act out the faults of real racks (flapping cables, boot loops, a broken activity manager, a
hung or overheating phone), the agent's health probe and runner meet them through the real adb server, and
a real server keeps unfit phones out of distribution until they are fit again."""

import asyncio
import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import adbutils

from phonefleet.agent.agent import Agent
from phonefleet.agent.config import AgentSettings
from phonefleet.agent.health import NOT_BOOTED
from phonefleet.protocol import events as ev
from phonefleet.protocol.health import HealthThresholds
from phonefleet.virtual import Fault, VirtualPhone
from tests.agent_fixtures import AgentFactory
from tests.agent_processes import agent_cli
from tests.conftest import RunningServer, eventually, open_url_job
from tests.health_fixtures import FleetFactory, TrackerFactory, control_request


def healthy(report: ev.DeviceReport) -> bool:
    return report.healthy


def transitions(reports: list[ev.DeviceReport]) -> int:
    """How often the phone went offline or came back, as the agent heard it."""
    online = [r.online for r in reports]
    return sum(a != b for a, b in itertools.pairwise(online))


async def test_a_flapping_phone_goes_offline_and_comes_back_again_and_again(
        fleet_factory: FleetFactory, tracker_factory: TrackerFactory) -> None:
    fleet = await fleet_factory(1)
    phone = fleet.phones[0]
    _, heard = await tracker_factory()
    await heard.until(phone, healthy)
    await fleet.set_fault(phone.adb_serial, "flap", flap_sec=1.5)

    async def flapped_twice() -> bool:
        return transitions(heard.of(phone)) >= 4

    await eventually(flapped_twice, timeout=20)
    await fleet.set_fault(phone.adb_serial, "none")
    await heard.until(phone, lambda r: r.healthy and r.online)


async def _reboot(adb_port: int, phone: VirtualPhone) -> None:
    device = adbutils.AdbClient(host="127.0.0.1", port=adb_port).device(phone.adb_serial)
    await asyncio.to_thread(device.shell, "reboot", timeout=10)


async def test_a_rebooted_phone_is_unhealthy_until_its_boot_completes(
        fleet_factory: FleetFactory, tracker_factory: TrackerFactory, adb_server: int) -> None:
    phone = VirtualPhone("REBOOT0001")
    phone.boot_time, phone.boot_settle_sec = 0.1, 1.5  # back on adb at once, booted 1.5 s later
    await fleet_factory(phones=[phone])
    _, heard = await tracker_factory(probe_sec=0.3)
    await heard.until(phone, healthy)
    said = len(heard.of(phone))
    await _reboot(adb_server, phone)
    await heard.until(phone, healthy, timeout=15, since=said)
    after = heard.of(phone)[said:]
    assert any(not r.online for r in after), "the reboot took it off adb"
    booting = [r for r in after if r.adb_state == "device" and r.boot_completed is False]
    assert booting and booting[0].broken == [NOT_BOOTED] and booting[0].health_reason == NOT_BOOTED


async def test_a_bootlooping_phone_never_finishes_booting(fleet_factory: FleetFactory,
                                                          tracker_factory: TrackerFactory, adb_server: int) -> None:
    phone = VirtualPhone("BOOTLOOP01")
    phone.boot_time, phone.bootloop_up_sec, phone.boot_settle_sec = 0.1, 1.0, 0.2
    await fleet_factory(phones=[phone])
    _, heard = await tracker_factory(probe_sec=0.3)
    await heard.until(phone, healthy)
    said = len(heard.of(phone))
    await phone.set_fault("bootloop")  # from the next reboot on
    await _reboot(adb_server, phone)

    def since_reboot() -> list[ev.DeviceReport]:
        return heard.of(phone)[said:]

    async def looped_twice() -> bool:  # up unbooted, down, up unbooted, down
        ups = [r for r in since_reboot() if r.adb_state == "device"]
        return len(ups) >= 2 and transitions(since_reboot()) >= 4

    await eventually(looped_twice, timeout=30)
    assert not any(r.boot_completed for r in since_reboot()), "it never booted"
    assert all(r.health_reason == NOT_BOOTED for r in since_reboot() if r.adb_state == "device")
    await phone.set_fault("none")
    booted = await heard.until(phone, healthy, timeout=15, since=said)
    assert booted.boot_completed


async def test_adb_reboot_reaches_a_hung_phone_ends_the_hang_and_is_counted(
        fleet_factory: FleetFactory, tracker_factory: TrackerFactory, adb_server: int) -> None:
    """adbd takes ``adb reboot`` itself (no shell), so a phone whose shell hangs still reboots, and comes back
    unhung; or into the fault it was told to boot into."""
    phone = VirtualPhone("REBOOTHANG1")
    phone.boot_time, phone.boot_settle_sec, phone.bootloop_up_sec = 0.1, 0.3, 0.5
    await fleet_factory(phones=[phone])
    _, heard = await tracker_factory(probe_sec=0.3, probe_timeout_sec=1.0)
    await heard.until(phone, healthy)
    await phone.set_fault("hang")
    await heard.until(phone, lambda r: r.health_reason == "probe timed out after 1 s")
    said = len(heard.of(phone))
    adb = [str(adbutils.adb_path()), "-P", str(adb_server), "-s", phone.adb_serial, "reboot"]
    await asyncio.to_thread(subprocess.run, adb, check=True, capture_output=True, timeout=30)
    await heard.until(phone, healthy, timeout=15, since=said)
    assert (phone.reboots, phone.fault) == (1, Fault.none)
    assert [r.service for r in phone.actions.records].count("reboot") == 1

    phone.next_boot_fault = Fault.bootloop
    said = len(heard.of(phone))
    await asyncio.to_thread(subprocess.run, adb, check=True, capture_output=True, timeout=30)
    await heard.until(phone, lambda r: r.health_reason == NOT_BOOTED, since=said)
    assert (phone.reboots, phone.fault, phone.next_boot_fault) == (2, Fault.bootloop, Fault.none)
    await phone.set_fault("none")
    await heard.until(phone, healthy, timeout=15, since=said)


# ------------------------------------------------------------------ with a real agent and server


async def _rows(server: RunningServer, job_id: int) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        job = await server.ok("GET", f"/api/jobs/{job_id}")
        if job["status"] != "completed":
            return None
        rows: list[dict[str, Any]] = (await server.ok("GET", f"/api/jobs/{job_id}/assignments"))["items"]
        return rows

    rows = await eventually(done, timeout=30)
    assert rows is not None
    return rows


async def _device(server: RunningServer, serial: str) -> dict[str, Any] | None:
    """The server's record of a phone: its state, and the health reason it stored (not yet in the REST body)."""
    async with server.services.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT state, health_reason FROM devices WHERE serial = $1", serial)
    return dict(row) if row is not None else None


async def test_amfail_fails_open_url_and_launch_app_steps(server: RunningServer,
                                                          agent_factory: AgentFactory) -> None:
    agent = await agent_factory("pc", virtual=1)
    assert agent.fleet is not None
    await agent.fleet.set_fault(agent.fleet.phones[0].adb_serial, "amfail")
    plans = [[{"type": "open_url", "url": "https://example.com/", "duration_sec": 0}],
             [{"type": "launch_app", "package": "com.android.settings", "activity": ".Settings"}],
             [{"type": "launch_app", "package": "com.android.settings"}]]
    for plan in plans:
        job = await server.ok("POST", "/api/jobs", open_url_job(plan=plan))
        (row,) = await _rows(server, job["id"])
        assert (row["status"], row["error_code"]) == ("failed", "step_failed"), plan
        assert "activity manager" in row["error"], row["error"]


async def test_a_phone_that_hangs_mid_run_times_the_run_out_and_turns_unhealthy(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    agent = await agent_factory("pc", virtual=1, probe_timeout_sec=1.0)
    assert agent.fleet is not None
    phone = agent.fleet.phones[0]
    mark = len(phone.actions)
    job = await server.ok("POST", "/api/jobs", open_url_job(timeout_sec=4, plan=[
        {"type": "open_url", "url": "https://example.com/hang", "duration_sec": 0.5}, {"type": "tap", "x": 1, "y": 2}]))
    await phone.actions.wait_for(lambda r: r.argv[:2] == ("am", "start"), timeout=20, since=mark)
    await phone.set_fault("hang")  # the tap never answers
    (row,) = await _rows(server, job["id"])
    assert (row["status"], row["error_code"]) == ("timed_out", "timeout")

    async def unhealthy() -> dict[str, Any] | None:
        mine = await _device(server, phone.adb_serial)
        return mine if mine is not None and mine["state"] == "unhealthy" else None

    device = await eventually(unhealthy, timeout=10)
    assert device is not None and device["health_reason"] == "probe timed out after 1 s"
    await phone.set_fault("none")


async def test_a_hot_phone_never_seen_before_gets_no_work_until_it_cools(server: RunningServer,
                                                                        agent_factory: AgentFactory) -> None:
    agent: Agent = await agent_factory("pc", virtual=2)
    assert agent.fleet is not None
    hot = VirtualPhone("HOT0000001")
    await hot.set_fault("hot")
    await agent.fleet.add(hot)  # plugged in hot: the server must never see it fit

    async def listed_unhealthy() -> dict[str, Any] | None:
        device = await _device(server, hot.adb_serial)
        return device if device is not None and device["state"] == "unhealthy" else None

    device = await eventually(listed_unhealthy, timeout=15)
    assert device is not None and device["health_reason"] == "battery 52.0 °C above 45.0 °C"
    job = await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=3, plan=[
        {"type": "open_url", "url": "https://example.com/heat", "duration_sec": 0}]))

    async def two_ran() -> bool:
        rows: list[dict[str, Any]] = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
        return [r["status"] for r in rows].count("completed") == 2

    await eventually(two_ran, timeout=30)
    assert not any(c.startswith(("am ", "monkey ")) for c in hot.actions.commands()), "the hot phone ran nothing"
    assert (await _device(server, hot.adb_serial) or {}).get("state") == "unhealthy"
    await hot.set_fault("none")  # it cools: back in distribution, it takes the third run
    rows = await _rows(server, job["id"])
    assert sorted(r["status"] for r in rows) == ["completed"] * 3
    assert any("https://example.com/heat" in c for c in hot.actions.commands())


async def test_a_fault_is_set_through_the_agents_control_endpoint_and_cli(server: RunningServer,
                                                                           agent_factory: AgentFactory) -> None:
    agent = await agent_factory("pc", virtual=1)
    assert agent.fleet is not None
    phone = agent.fleet.phones[0]
    path = f"/virtual/{phone.adb_serial}/fault"
    assert await control_request(agent.state_dir, "POST", path, {"fault": "lava"}) == (400, {
        "error": "fault: 'lava' is not one of hot, hang, flap, unauthorized, bootloop, amfail, blank, none",
        "field": "fault"})
    status, body = await control_request(agent.state_dir, "POST", path, {"fault": "flap", "flap_sec": -1})
    assert (status, body["field"]) == (400, "flap_sec")
    status, body = await control_request(agent.state_dir, "POST", path, {"fault": "hot", "colour": "red"})
    assert (status, body["field"]) == (400, "colour")
    status, body = await control_request(agent.state_dir, "POST", "/virtual/127.0.0.1:1/fault", {"fault": "hot"})
    assert (status, body["field"]) == (400, "serial")
    assert phone.fault.value == "none", "a bad request changes nothing"

    answer = await asyncio.to_thread(agent_cli, agent.state_dir, "virtual", phone.adb_serial, "--fault", "hot")
    assert answer == {"serial": phone.adb_serial, "online": True, "fault": "hot"}

    async def unhealthy_here() -> bool:
        return any(d["serial"] == phone.adb_serial and d["health_reason"] == "battery 52.0 °C above 45.0 °C"
                   for d in agent.devices())

    await eventually(unhealthy_here, timeout=10)
    shown = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "phonefleet.agent.cli", "devices",
                                                     "--state-dir", str(agent.state_dir)],
                                    capture_output=True, text=True, timeout=60, check=True)
    (line,) = [line for line in shown.stdout.splitlines() if phone.adb_serial in line]
    assert "52.0 °C" in line and line.endswith("UNHEALTHY: battery 52.0 °C above 45.0 °C"), line
    assert await control_request(agent.state_dir, "POST", path, {"fault": "none"}) == (200, {
        "serial": phone.adb_serial, "online": True, "fault": "none"})


async def test_the_servers_thresholds_hold_unless_an_agent_overrides_one(
        server_factory: Any, adb_server: int, tmp_path: Path) -> None:
    """A server that wants 50 % battery: the plain agent's phone at 42 % rests; the agent told 40 % works it.
    One agent at a time: two on one adb server see each other's phones, and the first to report one drives it."""
    strict = await server_factory(health_min_battery=50)
    expected = {"plain": ("unhealthy", "battery 42% below 50%"), "lenient": ("idle", None)}
    for name, override in (("plain", None), ("lenient", 40)):
        settings = AgentSettings(server=strict.url, token=await strict.add_agent(name), state_dir=tmp_path / name,
                                 virtual=1, adb_port=adb_server, probe_sec=0.5, min_battery=override)
        agent = Agent(settings)
        try:
            await agent.start()
            assert agent.fleet is not None
            phone = agent.fleet.phones[0]
            phone.battery_level = 42

            async def judged(serial: str = phone.adb_serial, want: tuple[str, str | None] = expected[name],
                             kept: Path = agent.state_dir / "health_thresholds.json") -> bool:
                if not await asyncio.to_thread(kept.exists):
                    return False  # not yet heard the server's thresholds
                async with strict.services.pool.acquire() as conn:
                    row = await conn.fetchrow("SELECT state, health_reason, battery FROM devices WHERE serial = $1",
                                              serial)
                return row is not None and row["battery"] == 42 and (row["state"], row["health_reason"]) == want

            await eventually(judged, timeout=15)
            (mine,) = [d for d in agent.devices() if d["serial"] == phone.adb_serial]
            assert (mine["healthy"], mine["health_reason"]) == (expected[name][0] == "idle", expected[name][1])
        finally:
            await agent.stop()
    kept = HealthThresholds.model_validate_json((tmp_path / "plain" / "health_thresholds.json").read_text())
    assert kept.min_battery == 50, "kept for the next start, which judges phones before its first hello"
