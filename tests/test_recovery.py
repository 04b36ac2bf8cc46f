"""The agent's recovery ladder: a phone offline, hung or unauthorized for a short grace gets reconnect, usb_reset,
reboot and power_cycle in turn until it probes healthy; a reboot budget and giving up (the server quarantines the
phone) instead of a reboot loop; operators' rungs; every rung in the phone's timeline on the server.

The first tests judge the policy's parts on their own (what a rung can fix, the budget kept across restarts,
finding a USB phone's port in sysfs, the power-cycle command); the rest run real agents with virtual phones
through the real adb server against a real server.
"""

import shlex
from pathlib import Path
from typing import Any

import adbutils
import pytest
from pydantic import ValidationError

from phonefleet.agent import health
from phonefleet.agent.adbhost import AdbHost
from phonefleet.agent.agent import Agent
from phonefleet.agent.config import AgentSettings
from phonefleet.agent.devices import PhoneState
from phonefleet.agent.outbox import Outbox
from phonefleet.agent.recovery import RecoveryStore, RungRecord
from phonefleet.agent.rungs import Rungs, RungSettings, ladder_problem, well
from phonefleet.protocol import events as ev
from phonefleet.protocol.enums import AssignmentStatus, RecoveryRung
from phonefleet.protocol.health import DeviceRecover
from phonefleet.protocol.plan import TapStep
from phonefleet.virtual import Fault
from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer, eventually
from tests.health_fixtures import (
    FAST_LADDER,
    device_of,
    of_phone,
    quick_boot,
    rungs_ended,
    state_becomes,
    timeline,
)


@pytest.mark.parametrize(("phone", "problem"), [
    (PhoneState("a", "offline"), "offline"),
    (PhoneState("a", "unauthorized"), health.UNAUTHORIZED),
    (PhoneState("a", "device", failure="probe timed out after 10 s"), "probe timed out after 10 s"),
    (PhoneState("a", "device", facts=health.ProbeFacts(boot_completed=False)), health.NOT_BOOTED),
    (PhoneState("a", "device", facts=health.ProbeFacts(boot_completed=True, battery=3, battery_temp_c=55.0,
                                                       data_free_mb=1)), None),
    (PhoneState("a", "device"), None),  # not probed yet
    (PhoneState("a", "gone"), None),  # unplugged
    (PhoneState("a", "bootloader"), None),
])
def test_only_what_a_rung_can_fix_calls_for_the_ladder(phone: PhoneState, problem: str | None) -> None:
    assert ladder_problem(phone) == problem
    assert well(phone) == (phone.status == "device" and phone.facts is not None and problem is None)


def test_the_reboot_budget_outlives_a_restart_and_counts_one_day(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    store = RecoveryStore(outbox)
    now = 1_000_000.0
    for hours_ago in (30, 23, 1):
        store.add_reboot("R5CW", now=now - hours_ago * 3600)
    store.add_reboot("OTHER", now=now)
    store.give_up("R5CW", "recovery failed after reconnect, reboot")
    outbox.close()

    again = RecoveryStore(Outbox(tmp_path / "outbox.sqlite3"))  # the agent started again
    assert again.reboots("R5CW", now=now) == 2, "the one 30 h ago no longer counts"
    assert again.reboots("R5CW", now=now + 22 * 3600) == 1
    assert again.given_up() == {"R5CW": "recovery failed after reconnect, reboot"}
    again.forgive("R5CW")
    assert again.given_up() == {}


def _usb_device(sysfs: Path, name: str, serial: str, busnum: int, devnum: int) -> None:
    folder = sysfs / name
    folder.mkdir(parents=True)
    for field, value in (("serial", serial), ("busnum", busnum), ("devnum", devnum)):
        (folder / field).write_text(f"{value}\n")


def _rungs(tmp_path: Path, tracker: Any = None, **settings: Any) -> Rungs:
    timeouts = dict.fromkeys(RecoveryRung, 5.0)
    return Rungs(tracker, AdbHost(), RungSettings(timeouts=timeouts, usb_sysfs=tmp_path / "sys",
                                                  usb_dev=tmp_path / "dev", **settings))


async def test_a_usb_phone_is_found_by_its_serial_in_sysfs_and_others_skip_the_usb_reset(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    _usb_device(sysfs, "1-1.4", "R5CW1234", 1, 7)
    _usb_device(sysfs, "2-3", "PIXEL0001", 2, 4)
    (sysfs / "1-1.4:1.0").mkdir()  # an interface of the first: no serial of its own
    node = tmp_path / "dev" / "001" / "007"
    node.parent.mkdir(parents=True)
    node.write_bytes(b"")
    rungs = _rungs(tmp_path)
    assert await rungs.skipped("R5CW1234", RecoveryRung.usb_reset) is None
    assert await rungs.skipped("192.168.1.20:5555", RecoveryRung.usb_reset) == (
        "not a USB phone (192.168.1.20:5555 is a network address)")
    assert await rungs.skipped("NOPE", RecoveryRung.usb_reset) == f"no USB device with serial NOPE under {sysfs}"
    assert await rungs.skipped("PIXEL0001", RecoveryRung.usb_reset) == (
        f"{tmp_path / 'dev' / '002' / '004'} is not writable by this user (a udev rule can allow it)")


async def test_the_power_cycle_command_is_filled_from_settings_then_sysfs(tmp_path: Path) -> None:
    _usb_device(tmp_path / "sys", "1-1.4.2", "R5CW1234", 1, 9)
    _usb_device(tmp_path / "sys", "3-2", "ROOTHUB01", 3, 2)
    rungs = _rungs(tmp_path, power_cycle_command="uhubctl -l {hub} -p {port} -a cycle -d 5 # {serial}",
                   power_cycle_ports={"PINNED": {"hub": "2-1", "port": "7"}})
    assert rungs.power_cycle_argv("R5CW1234") == shlex.split("uhubctl -l 1-1.4 -p 2 -a cycle -d 5 # R5CW1234")
    assert rungs.power_cycle_argv("ROOTHUB01") == shlex.split("uhubctl -l 3 -p 2 -a cycle -d 5 # ROOTHUB01")
    assert rungs.power_cycle_argv("PINNED") == shlex.split("uhubctl -l 2-1 -p 7 -a cycle -d 5 # PINNED")
    assert await rungs.skipped("PINNED", RecoveryRung.power_cycle) is None
    assert await rungs.skipped("10.0.0.5:5555", RecoveryRung.power_cycle) == (
        "no {hub} for 10.0.0.5:5555: set it in power_cycle_ports (it is not on this PC's USB)")
    assert await _rungs(tmp_path).skipped("R5CW1234", RecoveryRung.power_cycle) == "no power_cycle_command configured"


def test_recovery_settings_refuse_what_cannot_work(tmp_path: Path) -> None:
    base: dict[str, Any] = {"state_dir": tmp_path}
    with pytest.raises(ValidationError, match=r"unknown placeholder \{hubb\}: use busnum, devnum, devpath, hub"):
        AgentSettings(**base, power_cycle_command="uhubctl -l {hubb} -a cycle")
    with pytest.raises(ValidationError, match="not a command line"):
        AgentSettings(**base, power_cycle_command="uhubctl 'unclosed")
    with pytest.raises(ValidationError, match="R5CW: unknown placeholder 'slot'"):
        AgentSettings(**base, power_cycle_ports={"R5CW": {"slot": "4"}})
    with pytest.raises(ValidationError, match="recovery_grace_sec"):
        AgentSettings(**base, recovery_grace_sec=0)
    with pytest.raises(ValidationError, match="recovery_max_reboots_per_day"):
        AgentSettings(**base, recovery_max_reboots_per_day=-1)
    settings = AgentSettings(**base, recovery_reboot_timeout_sec=60, power_cycle_command=" ")
    assert settings.power_cycle_command is None, "blank: no power-cycle rung"
    assert settings.rung_settings().timeouts[RecoveryRung.reboot] == 60.0
    assert settings.ladder_settings().max_reboots_per_day == 3


def test_recovery_settings_come_from_the_environment_and_agent_toml(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "agent.toml").write_text('power_cycle_command = "uhubctl -l {hub} -p {port} -a cycle"\n'
                                         'recovery_grace_sec = 45\n'
                                         '[power_cycle_ports.R5CW]\nhub = "1-1"\nport = "3"\n')
    monkeypatch.setenv("PHONEFLEET_AGENT_RECOVERY", "false")
    monkeypatch.setenv("PHONEFLEET_AGENT_RECOVERY_MAX_REBOOTS_PER_DAY", "1")
    settings = AgentSettings.load(state_dir=tmp_path)
    assert (settings.recovery, settings.recovery_grace_sec, settings.recovery_max_reboots_per_day) == (False, 45, 1)
    assert settings.power_cycle_ports == {"R5CW": {"hub": "1-1", "port": "3"}}
    monkeypatch.setenv("PHONEFLEET_AGENT_POWER_CYCLE_PORTS", '{"X1": {"port": "2"}, "R5CW": {"port": "4"}}')
    assert AgentSettings.load(state_dir=tmp_path).power_cycle_ports == {  # merged, the environment's value winning
        "R5CW": {"hub": "1-1", "port": "4"}, "X1": {"port": "2"}}


# ------------------------------------------------------------------ real agents, virtual phones, a real server


def _timed(records: list[RungRecord]) -> str:
    return ", ".join(f"{r.rung} {r.outcome} {r.took_sec:.2f} s" for r in records)


async def _ladder_agent(agent_factory: AgentFactory, name: str = "pc", virtual: int = 1, **overrides: Any) -> Agent:
    agent = await agent_factory(name, virtual=virtual, **{**FAST_LADDER, **overrides})
    assert agent.fleet is not None and agent.recovery is not None
    quick_boot(*agent.fleet.phones)
    return agent


async def test_a_hung_phone_is_healed_by_the_reboot_rung_and_its_timeline_shows_each_rung(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    agent = await _ladder_agent(agent_factory)
    assert agent.fleet is not None
    phone = agent.fleet.phones[0]
    await phone.set_fault("hang")
    records = await rungs_ended(agent, lambda h: ("reboot", "healed") in of_phone(h, phone))
    print(f"\nladder on a hung virtual phone: {_timed(records)}")
    assert of_phone(records, phone) == [("reconnect", "failed"), ("usb_reset", "skipped"), ("reboot", "healed")]
    records = [r for r in records if r.serial == phone.adb_serial]  # a phone an earlier test left may show up too
    reconnect, usb_reset, reboot = records
    assert reconnect.detail == "probe timed out after 1 s", "reconnecting does not help a hung phone"
    assert usb_reset.detail == f"not a USB phone ({phone.adb_serial} is a network address)"
    assert reboot.detail is not None and reboot.detail.startswith("healthy after ")
    assert {r.by for r in records} == {"agent"} and not any(r.give_up for r in records)
    assert (phone.reboots, phone.fault) == (1, Fault.none)

    device = await state_becomes(server, phone.adb_serial, "idle")
    events = await timeline(server, device["id"], "recovery_started", "recovery_ended", count=6)
    assert [(e["kind"], e["actor"], e["data"]) for e in events] == [
        ("recovery_started", "agent", {"rung": "reconnect"}),
        ("recovery_ended", "agent", {"rung": "reconnect", "outcome": "failed"}),
        ("recovery_started", "agent", {"rung": "usb_reset"}),
        ("recovery_ended", "agent", {"rung": "usb_reset", "outcome": "skipped"}),
        ("recovery_started", "agent", {"rung": "reboot"}),
        ("recovery_ended", "agent", {"rung": "reboot", "outcome": "healed"})]
    assert events[1]["reason"] == "probe timed out after 1 s"
    assert agent.recovery is not None and agent.recovery.given_up == {}


async def test_ladders_past_the_concurrency_bound_wait_their_turn(server: RunningServer,
                                                                  agent_factory: AgentFactory) -> None:
    agent = await _ladder_agent(agent_factory, virtual=2, recovery_max_concurrent=1)
    assert agent.fleet is not None
    for phone in agent.fleet.phones:
        await phone.set_fault("hang")
    records = await rungs_ended(agent, lambda h: sum(r.outcome == "healed" for r in h) == 2, timeout=40)
    spans = {}
    for phone in agent.fleet.phones:
        mine = [r for r in records if r.serial == phone.adb_serial]
        assert [(r.rung, r.outcome) for r in mine] == [("reconnect", "failed"), ("usb_reset", "skipped"),
                                                       ("reboot", "healed")]
        spans[phone.adb_serial] = (min(r.ended_at - r.took_sec for r in mine), max(r.ended_at for r in mine))
    first, second = sorted(spans.values())
    assert first[1] <= second[0] + 0.01, "one ladder at a time (10 ms for two clocks)"


async def test_a_phone_the_ladder_cannot_heal_is_given_up_and_quarantined_not_rebooted_in_a_loop(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    """A hung phone whose reboot starts a boot loop: one reboot, then the server quarantines it, and the loop
    goes on without another rung."""
    agent = await _ladder_agent(agent_factory)
    assert agent.fleet is not None and agent.recovery is not None
    phone = agent.fleet.phones[0]
    await phone.set_fault("hang")
    phone.next_boot_fault = Fault.bootloop
    records = await rungs_ended(agent, lambda h: any(r.give_up for r in h), timeout=40)
    print(f"\nladder on a boot-looping virtual phone: {_timed(records)}")
    assert of_phone(records, phone) == [("reconnect", "failed"), ("usb_reset", "skipped"), ("reboot", "timed_out"),
                                        ("power_cycle", "skipped")]
    assert records[2].detail is not None and records[2].detail.startswith("not healthy within 10 s")
    assert records[3].detail == "no power_cycle_command configured; recovery failed after reconnect, reboot"
    assert agent.recovery.given_up == {phone.adb_serial: "recovery failed after reconnect, reboot"}
    device = await state_becomes(server, phone.adb_serial, "quarantined")
    detail = await server.ok("GET", f"/api/devices/{device['id']}")
    assert detail["quarantine_reason"] == (
        "recovery failed: power_cycle skipped: no power_cycle_command configured; recovery failed after reconnect, "
        "reboot")

    handshakes = phone.handshakes

    async def looped_thrice() -> bool:  # up unbooted, down, up again ... each time a new adb connection
        return phone.handshakes >= handshakes + 3

    await eventually(looped_thrice, timeout=20)
    assert phone.reboots == 1, "one reboot, then no more"
    assert len(agent.recovery.history) == 4, "no second ladder on a phone given up on"
    await phone.set_fault("none")


async def test_past_its_reboot_budget_a_phone_is_given_up_with_the_budget_as_the_reason(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    agent = await _ladder_agent(agent_factory, recovery_max_reboots_per_day=2)
    assert agent.fleet is not None
    phone = agent.fleet.phones[0]
    for healed in (1, 2):  # it hangs, a reboot heals it, it hangs again ...
        await state_becomes(server, phone.adb_serial, "idle")
        await phone.set_fault("hang")

        def healed_again(records: list[RungRecord], times: int = healed) -> bool:
            return of_phone(records, phone).count(("reboot", "healed")) == times

        await rungs_ended(agent, healed_again)
    await phone.set_fault("hang")
    records = await rungs_ended(agent, lambda h: any(r.give_up for r in h))
    assert of_phone(records, phone)[-3:] == [("reconnect", "failed"), ("usb_reset", "skipped"), ("reboot", "skipped")]
    assert (records[-1].detail, records[-1].give_up) == ("reboot budget spent (2 in 24 h)", True)
    assert phone.reboots == 2
    device = await state_becomes(server, phone.adb_serial, "quarantined")
    assert (await server.ok("GET", f"/api/devices/{device['id']}"))["quarantine_reason"] == (
        "recovery failed: reboot skipped: reboot budget spent (2 in 24 h)")
    await phone.set_fault("none")


async def test_an_unauthorized_phone_is_given_up_without_a_reboot_and_forgiven_once_authorized(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    agent = await _ladder_agent(agent_factory)
    assert agent.fleet is not None and agent.recovery is not None and agent.tracker is not None
    phone = agent.fleet.phones[0]
    await phone.set_fault("unauthorized")
    records = await rungs_ended(agent, lambda h: any(r.give_up for r in h))
    print(f"\nladder on an unauthorized virtual phone: {_timed(records)}")
    assert of_phone(records, phone) == [("reconnect", "failed"), ("usb_reset", "skipped"), ("reboot", "skipped"),
                                        ("power_cycle", "skipped")]
    assert records[2].detail == "adb cannot reach the phone (device unauthorized.)"
    await state_becomes(server, phone.adb_serial, "quarantined")
    rounds = agent.tracker.rounds

    async def probed_thrice() -> bool:
        assert agent.tracker is not None
        return agent.tracker.rounds >= rounds + 3

    await eventually(probed_thrice, timeout=10)
    assert len(agent.recovery.history) == 4 and phone.reboots == 0, "no second ladder, no reboot"

    await phone.set_fault("none")  # the prompt accepted: healthy again, the ladder may climb again some day

    async def forgiven() -> bool:
        assert agent.recovery is not None
        return agent.recovery.given_up == {}

    await eventually(forgiven, timeout=10)


async def test_an_offline_network_phone_is_given_up_then_connected_again_once_it_answers(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    agent = await _ladder_agent(agent_factory)
    assert agent.fleet is not None and agent.recovery is not None
    phone = agent.fleet.phones[0]
    await phone.go_offline()  # its Wi-Fi went away
    records = await rungs_ended(agent, lambda h: any(r.give_up for r in h))
    print(f"\nladder on an offline virtual phone: {_timed(records)}")
    assert of_phone(records, phone) == [("reconnect", "failed"), ("usb_reset", "skipped"), ("reboot", "skipped"),
                                        ("power_cycle", "skipped")]
    assert "Connection refused" in (records[0].detail or "")
    assert records[2].detail == f"adb cannot reach the phone (device '{phone.adb_serial}' not found)", (
        "the reconnect took it off adb")
    await state_becomes(server, phone.adb_serial, "quarantined")

    await phone.come_back()  # the agent connects it again (adb itself no longer tries: it was disconnected)

    async def forgiven() -> bool:
        assert agent.recovery is not None
        return agent.recovery.given_up == {}

    await eventually(forgiven, timeout=15)
    assert agent.tracker is not None and agent.tracker.phones[phone.adb_serial].status == "device"


async def test_an_operators_rung_runs_at_once_and_is_reported_as_theirs(
        server: RunningServer, agent_factory: AgentFactory, adb_server: int) -> None:
    command = f"{shlex.quote(str(adbutils.adb_path()))} -P {adb_server} -s {{serial}} reboot"
    agent = await _ladder_agent(agent_factory, power_cycle_command=command)  # the "power switch" reboots it
    assert agent.fleet is not None and agent.recovery is not None
    phone = agent.fleet.phones[0]
    device = await device_of(server, phone.adb_serial)
    recover = f"/api/devices/{device['id']}/recover"
    accepted = await server.ok("POST", recover, {"rung": "reboot"}, expect=202)
    assert accepted == {"device_id": device["id"], "serial": phone.adb_serial, "rung": "reboot", "sent": True}
    records = await rungs_ended(agent, lambda h: len(h) == 1)
    assert [(r.rung, r.outcome, r.by) for r in records] == [("reboot", "healed", "env")]
    assert phone.reboots == 1, "a healthy phone rebooted because an operator asked"

    await state_becomes(server, phone.adb_serial, "idle")
    await server.ok("POST", recover, {"rung": "power_cycle"}, expect=202)
    records = await rungs_ended(agent, lambda h: len(h) == 2)
    print(f"\noperator rungs on a virtual phone: {_timed(records)}")
    assert (records[1].rung, records[1].outcome, records[1].by) == ("power_cycle", "healed", "env")
    assert phone.reboots == 2

    await state_becomes(server, phone.adb_serial, "idle")
    await server.ok("POST", recover, {"rung": "usb_reset"}, expect=202)
    records = await rungs_ended(agent, lambda h: len(h) == 3)
    assert (records[2].outcome, records[2].detail) == (
        "skipped", f"not a USB phone ({phone.adb_serial} is a network address)")

    await state_becomes(server, phone.adb_serial, "idle")  # two asks at once: the second finds the phone held
    agent.on_recover(DeviceRecover(serial=phone.adb_serial, rung=RecoveryRung.reconnect, by="alice"))
    agent.on_recover(DeviceRecover(serial=phone.adb_serial, rung=RecoveryRung.reboot, by="bob"))
    records = await rungs_ended(agent, lambda h: len(h) == 5)
    assert [(r.rung, r.outcome, r.by, r.detail) for r in records[3:]] == [
        ("reboot", "skipped", "bob", "a rung is already running"),
        ("reconnect", "healed", "alice", records[4].detail)]
    events = await timeline(server, device["id"], "recovery_ended", count=5)
    assert [(e["actor"], e["data"]["rung"], e["data"]["outcome"]) for e in events] == [
        ("env", "reboot", "healed"), ("env", "power_cycle", "healed"), ("env", "usb_reset", "skipped"),
        ("bob", "reboot", "skipped"), ("alice", "reconnect", "healed")]


async def test_no_work_starts_on_a_phone_while_a_rung_holds_it(server: RunningServer,
                                                               agent_factory: AgentFactory) -> None:
    agent = await _ladder_agent(agent_factory)
    assert agent.fleet is not None
    phone = agent.fleet.phones[0]
    phone.boot_settle_sec = 2.0  # a slow boot: the order comes while the reboot rung waits for it
    device = await device_of(server, phone.adb_serial)
    agent.on_recover(DeviceRecover(serial=phone.adb_serial, rung=RecoveryRung.reboot, by="alice"))
    worker = agent.workers[phone.adb_serial]
    assert worker.recovering == "alice"
    # As if the server had sent a run before it heard of the rung. The run is a real row, so a full list of
    # orders (a reconnect on a loaded machine) keeps it rather than dropping an assignment the server never made.
    async with server.services.pool.acquire() as conn:
        made = await conn.fetchrow(
            """WITH j AS (INSERT INTO jobs (title, plan, target_type, target_value, target_count, status, timeout_sec,
                                        max_retries, activated_at, assigned_count)
                          VALUES ('held', '[{"type": "tap", "x": 1, "y": 2}]', 'device_count', 1, 1, 'active', 30,
                                  0, now(), 1) RETURNING id)
               INSERT INTO assignments (job_id, device_id, agent_id, status, attempt)
               SELECT j.id, d.id, d.agent_id, 'delivered', 1 FROM j, devices d WHERE d.id = $1
               RETURNING job_id, id""", device["id"])
    assert made is not None
    job_id, assignment_id = made
    worker.offer(ev.AssignmentOrder(
        assignment_id=assignment_id, job_id=job_id, device_id=device["id"], serial=phone.adb_serial, title="held",
        plan=[TapStep(x=1, y=2)], priority=0, timeout_sec=30, attempt=1, status=AssignmentStatus.delivered))
    (rung,) = await rungs_ended(agent, lambda h: len(h) == 1)
    assert rung.outcome == "healed" and rung.took_sec > 2.0
    tapped = await phone.actions.wait_for(lambda r: r.argv[:2] == ("input", "tap"), timeout=10)
    assert tapped.timestamp >= rung.ended_at, "the run waited for the rung"
    assert worker.recovering is None


async def test_an_agent_with_recovery_off_climbs_no_ladder_but_runs_an_operators_rung(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    agent = await _ladder_agent(agent_factory, recovery=False)
    assert agent.fleet is not None and agent.recovery is not None and agent.tracker is not None
    phone = agent.fleet.phones[0]
    await phone.set_fault("hang")
    await state_becomes(server, phone.adb_serial, "unhealthy")
    rounds = agent.tracker.rounds

    async def probed_thrice() -> bool:
        assert agent.tracker is not None
        return agent.tracker.rounds >= rounds + 3

    await eventually(probed_thrice, timeout=15)
    assert agent.recovery.history == []
    agent.on_recover(DeviceRecover(serial=phone.adb_serial, rung=RecoveryRung.reboot, by="alice"))
    records = await rungs_ended(agent, lambda h: len(h) == 1)
    assert (records[0].rung, records[0].outcome) == ("reboot", "healed")
