"""The health probe: one shell round trip reads every fact; thresholds (the defaults, the server's, an agent's
own) decide whether a phone gets work, and say why not in words an operator acts on.

The first tests judge probe output and facts on their own; the rest probe virtual phones through the real
adb server, as the agent does.
"""

import asyncio

import pytest
from pydantic import ValidationError

from phonefleet.agent import health
from phonefleet.agent.devices import DeviceTracker, PhoneState
from phonefleet.protocol import events as ev
from phonefleet.protocol.health import HealthThresholds
from phonefleet.server.config import Settings
from phonefleet.virtual import VirtualPhone
from tests.conftest import eventually
from tests.health_fixtures import FleetFactory, TrackerFactory

REAL_PHONE = "\r\n".join([
    ":pf:boot", "1", ":pf:model", "SM-S911B", ":pf:release", "14",
    ":pf:battery", "Current Battery Service state:", "  AC powered: false", "  USB powered: false",
    "  Wireless powered: false", "  Max charging current: 0", "  status: 3", "  health: 2", "  present: true",
    "  level: 9", "  scale: 100", "  voltage: 3612", "  temperature: 468", "  technology: Li-ion",
    ":pf:power", "  mWakefulness=Asleep", "Display Power: state=OFF",
    ":pf:keyguard", "    mShowingDream=false mDreamingLockscreen=true mDreamingSleepToken=null", "      showing=true",
    "        mIsShowing=true",
    ":pf:df", "Filesystem        1K-blocks      Used Available Use% Mounted on",
    "/dev/block/dm-48  230000000 229877120    122880 100% /data",
    ":pf:end", "",
])
"""What ``health.PROBE_COMMAND`` prints on a (tired) Samsung phone: CRLF line ends, as a pty gives them."""


def test_probe_output_of_a_phone_reads_into_facts() -> None:
    assert health.parse_probe(REAL_PHONE) == health.ProbeFacts(
        boot_completed=True, model="SM-S911B", android_version="14", battery=9, battery_temp_c=46.8, charging=False,
        screen_on=False, screen_locked=True, data_free_mb=120)


def test_probe_output_cut_short_is_a_probe_failure() -> None:
    with pytest.raises(health.ProbeOutputError):
        health.parse_probe(REAL_PHONE.split(":pf:df")[0])


def test_each_broken_threshold_says_why_and_all_are_joined() -> None:
    facts = health.parse_probe(REAL_PHONE)
    phone = PhoneState("R5CW", "device", facts=facts, probe_sec=6.24)
    report = phone.report(HealthThresholds())
    assert report.broken == ["battery 9% below 15%", "battery 46.8 °C above 45.0 °C", "/data 120 MB free, below 500 MB",
                             "probe took 6.2 s, above 5.0 s"]
    assert (report.healthy, report.health_reason) == (False, "; ".join(report.broken))
    assert (report.adb_state, report.battery, report.battery_temp_c, report.data_free_mb, report.probe_ms) == (
        "device", 9, 46.8, 120, 6240.0)


@pytest.mark.parametrize(("adb_state", "facts", "failure", "expected"), [
    ("device", health.ProbeFacts(battery_temp_c=52.0), None, ["battery 52.0 °C above 45.0 °C"]),
    ("device", health.ProbeFacts(boot_completed=False), None, ["not booted (sys.boot_completed != 1)"]),
    ("device", None, "probe timed out after 10 s", ["probe timed out after 10 s"]),
    ("unauthorized", None, None, ["adb unauthorized: accept the debugging prompt on the phone"]),
    ("recovery", None, None, ["adb state recovery"]),
    ("no permissions (missing udev rules? user is in the plugdev group); see [http://developer.android.com/tools/"
     "device.html]", None, None, ["adb state no permissions (missing udev rules? user is in the plugdev group); see "
                                  "[http://developer.android.com/tools/device.html]"]),
    ("device", health.ProbeFacts(battery=15, battery_temp_c=45.0, data_free_mb=500, boot_completed=True), None, []),
    ("offline", None, None, []),
])
def test_health_is_judged_on_the_adb_state_then_the_facts(adb_state: str, facts: health.ProbeFacts | None,
                                                          failure: str | None, expected: list[str]) -> None:
    assert health.assess(adb_state, facts, failure, 0.1, HealthThresholds()) == expected


def test_an_agents_own_thresholds_win_over_the_servers_one_by_one() -> None:
    server = HealthThresholds(min_battery=30, max_battery_temp_c=40.0, min_data_free_mb=1000, max_probe_sec=3.0)
    assert health.thresholds_in_force(None, {}) == HealthThresholds()
    assert health.thresholds_in_force(server, {}) == server
    assert health.thresholds_in_force(server, {"min_battery": 10, "max_probe_sec": 8.0}) == HealthThresholds(
        min_battery=10, max_battery_temp_c=40.0, min_data_free_mb=1000, max_probe_sec=8.0)


def test_the_servers_health_settings_are_the_thresholds_it_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().health_thresholds() == HealthThresholds()
    monkeypatch.setenv("PHONEFLEET_HEALTH_MAX_BATTERY_TEMP_C", "40.5")
    assert Settings.from_env(health_min_battery=25).health_thresholds() == HealthThresholds(
        min_battery=25, max_battery_temp_c=40.5)
    monkeypatch.setenv("PHONEFLEET_HEALTH_MIN_DATA_FREE_MB", "-1")
    with pytest.raises(ValidationError, match="health_min_data_free_mb"):
        Settings.from_env()


def test_only_what_matters_is_reported_again() -> None:
    before = ev.DeviceReport(serial="p", battery=80, battery_temp_c=30.0, data_free_mb=9000, probe_ms=40.0)
    assert health.worth_reporting(None, before)
    assert not health.worth_reporting(before, before.model_copy(update={
        "battery": 77, "battery_temp_c": 31.5, "data_free_mb": 8000, "probe_ms": 90.0, "screen_on": True}))
    assert health.worth_reporting(before, before.model_copy(update={"battery": 75}))
    assert health.worth_reporting(before, before.model_copy(update={"battery_temp_c": 32.0}))
    crossed = {"healthy": False, "broken": ["/data 400 MB free, below 500 MB"]}
    assert health.worth_reporting(before, before.model_copy(update=crossed))
    assert health.worth_reporting(before, before.model_copy(update={"adb_state": "unauthorized"}))


# ------------------------------------------------------------------ through the real adb server


def healthy(report: ev.DeviceReport) -> bool:
    return report.healthy


async def test_the_probe_reads_every_fact_from_a_virtual_phone(fleet_factory: FleetFactory,
                                                               tracker_factory: TrackerFactory) -> None:
    phone = VirtualPhone("FACTS0001", battery_level=42, screen_on=False)
    phone.state.battery_tenths_c = 301
    phone.state.ac_powered, phone.state.usb_powered = True, False
    phone.state.screen_locked = True
    phone.state.data_free_kb = 300 * 1024
    await fleet_factory(phones=[phone])
    _, heard = await tracker_factory()
    report = await heard.until(phone, lambda r: r.adb_state == "device")
    assert (report.online, report.boot_completed, report.model, report.android_version, report.battery,
            report.battery_temp_c, report.charging, report.screen_on, report.screen_locked, report.data_free_mb) == (
        True, True, "Pixel 7", "14", 42, 30.1, True, False, True, 300)
    assert report.probe_ms is not None and report.probe_ms > 0
    assert (report.healthy, report.health_reason, report.broken) == (
        False, "/data 300 MB free, below 500 MB", ["/data 300 MB free, below 500 MB"])


async def test_a_hot_phone_is_unhealthy_until_it_cools(fleet_factory: FleetFactory,
                                                       tracker_factory: TrackerFactory) -> None:
    fleet = await fleet_factory(1)
    phone = fleet.phones[0]
    _, heard = await tracker_factory()
    await heard.until(phone, healthy)
    await fleet.set_fault(phone.adb_serial, "hot")
    hot = await heard.until(phone, lambda r: not r.healthy)
    assert (hot.health_reason, hot.broken, hot.battery_temp_c, hot.online) == (
        "battery 52.0 °C above 45.0 °C", ["battery 52.0 °C above 45.0 °C"], 52.0, True)
    await fleet.set_fault(phone.adb_serial, "none")
    cooled = await heard.until(phone, healthy)
    assert (cooled.health_reason, cooled.broken, cooled.battery_temp_c) == (None, [], 28.5)


async def test_a_hung_phone_is_unhealthy_within_one_interval_and_the_probe_timeout(
        fleet_factory: FleetFactory, tracker_factory: TrackerFactory) -> None:
    fleet = await fleet_factory(1)
    phone = fleet.phones[0]
    probe_sec, timeout_sec = 1.0, 1.5
    _, heard = await tracker_factory(probe_sec=probe_sec, probe_timeout_sec=timeout_sec)
    await heard.until(phone, healthy)
    await phone.set_fault("hang")
    # one interval, the timeout, and a report: the round reports what it has once a second
    hung = await heard.until(phone, lambda r: not r.healthy, timeout=probe_sec + timeout_sec + 1.0 + 1.0)
    assert (hung.health_reason, hung.adb_state, hung.online) == ("probe timed out after 1.5 s", "device", True)
    await phone.set_fault("none")
    await heard.until(phone, healthy)


async def test_an_unauthorized_phone_asks_for_the_prompt_to_be_accepted(fleet_factory: FleetFactory,
                                                                        tracker_factory: TrackerFactory) -> None:
    fleet = await fleet_factory(1)
    phone = fleet.phones[0]
    _, heard = await tracker_factory()
    await heard.until(phone, healthy)
    await phone.set_fault("unauthorized")
    report = await heard.until(phone, lambda r: r.adb_state == "unauthorized")
    reason = "adb unauthorized: accept the debugging prompt on the phone"
    assert (report.online, report.healthy, report.health_reason, report.broken) == (True, False, reason, [reason])
    await phone.set_fault("none")  # the prompt accepted
    back = await heard.until(phone, healthy)
    assert back.adb_state == "device"


async def test_thresholds_in_force_decide_health_without_a_new_probe(fleet_factory: FleetFactory,
                                                                     tracker_factory: TrackerFactory) -> None:
    phone = VirtualPhone("LIMITS0001", battery_level=30)
    phone.state.battery_tenths_c = 400
    await fleet_factory(phones=[phone])
    tracker, heard = await tracker_factory(probe_sec=3600)  # no probe after the first: thresholds alone decide
    assert (await heard.until(phone, lambda r: r.adb_state == "device")).healthy  # the defaults: 15 %, 45.0 °C

    def mine(reports: list[ev.DeviceReport]) -> list[str | None]:
        return [r.health_reason for r in reports if r.serial == phone.adb_serial]

    server = HealthThresholds(min_battery=40, max_battery_temp_c=38.0)
    assert mine(tracker.set_thresholds(health.thresholds_in_force(server, {}))) == [
        "battery 30% below 40%; battery 40.0 °C above 38.0 °C"]
    assert mine(tracker.set_thresholds(health.thresholds_in_force(server, {"min_battery": 20}))) == [
        "battery 40.0 °C above 38.0 °C"]
    both = {"min_battery": 20, "max_battery_temp_c": 45.0}
    assert mine(tracker.set_thresholds(health.thresholds_in_force(server, both))) == [None]
    assert mine(tracker.set_thresholds(health.thresholds_in_force(server, both))) == [], "nothing changed: not sent"


async def _rounds(tracker: DeviceTracker, count: int) -> None:
    """Wait until the tracker has run ``count`` more probe rounds."""
    mark = tracker.rounds + count

    async def past() -> bool:
        return tracker.rounds >= mark

    await eventually(past)


async def test_a_phone_whose_probes_change_nothing_is_not_reported_again(fleet_factory: FleetFactory,
                                                                         tracker_factory: TrackerFactory) -> None:
    fleet = await fleet_factory(1)
    phone = fleet.phones[0]
    tracker, heard = await tracker_factory(probe_sec=0.2)
    await heard.until(phone, healthy)
    said = len(heard.of(phone))
    for battery in (100, 97):  # the same, then a small move: news for no one
        phone.battery_level = battery
        await _rounds(tracker, 3)
        assert len(heard.of(phone)) == said
    phone.battery_level = 94
    assert (await heard.until(phone, lambda r: r.battery == 94)).healthy
    assert len(heard.of(phone)) == said + 1


async def test_two_hundred_phones_are_probed_at_once(fleet_factory: FleetFactory,
                                                     tracker_factory: TrackerFactory) -> None:
    """Every fact of every phone in one round; how long it takes is printed (its bound is the interval, 15 s)."""
    fleet = await fleet_factory(200)
    tracker, _ = await tracker_factory(probe_sec=3600, probe_timeout_sec=10.0)  # this test runs the round
    loop = asyncio.get_running_loop()
    started = loop.time()
    await tracker.probe_all()
    took = loop.time() - started
    reports = tracker.reports(fleet.serials)
    assert len(reports) == 200
    assert all(r.healthy and r.battery == 100 and r.probe_ms is not None for r in reports), [
        r.health_reason for r in reports if not r.healthy][:5]
    print(f"\n200 virtual phones probed in {took:.2f} s (32 at a time); slowest probe "
          f"{max(r.probe_ms or 0 for r in reports):.0f} ms")
    assert took < 15.0, f"a round of 200 phones took {took:.1f} s, longer than the 15 s interval"
