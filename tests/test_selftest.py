"""The self-test that lets a quarantined phone back (boot completed, a shell round trip, a screenshot not all one
colour), and the fleet's thresholds reaching agents at once.

The first tests read PNGs made with every PNG filter; the rest run the self-test on virtual phones through the
real adb server, and real agents against a real server: a quarantined phone past its cool-down is released by
a passed self-test, a blank-screened one is not.
"""

import struct
import zlib

import pytest

from phonefleet.agent.adbhost import AdbHost
from phonefleet.agent.screenshots import PngError, verdict
from phonefleet.agent.selftest import run_selftest
from phonefleet.protocol.health import HealthThresholds
from phonefleet.virtual import VirtualPhone
from phonefleet.virtual.screen import Picture, ScreenRenderer
from tests.agent_fixtures import AgentFactory
from tests.conftest import RunningServer
from tests.health_fixtures import FAST_LADDER, FleetFactory, device_of, state_becomes, timeline


def _predictor(kind: int, a: int, b: int, c: int) -> int:
    if kind == 0:
        return 0
    if kind == 1:
        return a
    if kind == 2:
        return b
    if kind == 3:
        return (a + b) // 2
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _png(rows: list[bytes], width: int, colour_type: int, bpp: int, filters: list[int]) -> bytes:
    """A PNG of ``rows`` (raw pixel bytes), each row filtered as ``filters`` says: the reference encoder."""
    raw, prev = bytearray(), bytes(len(rows[0]))
    for row, kind in zip(rows, filters, strict=True):
        raw.append(kind)
        raw += bytes((x - _predictor(kind, row[i - bpp] if i >= bpp else 0, prev[i],
                                     prev[i - bpp] if i >= bpp else 0)) & 0xFF for i, x in enumerate(row))
        prev = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, len(rows), 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(
        b"IEND", b"")


@pytest.mark.parametrize("colour_type", [2, 6, 0])
@pytest.mark.parametrize("filters", [[0] * 5, [1] * 5, [2] * 5, [3] * 5, [4] * 5, [4, 3, 2, 1, 0], [1, 4, 0, 3, 2]])
def test_a_png_in_one_colour_is_told_from_one_with_a_single_other_pixel(colour_type: int,
                                                                       filters: list[int]) -> None:
    bpp = {0: 1, 2: 3, 6: 4}[colour_type]
    width, pixel = 7, bytes([201, 99, 3, 255][:bpp])
    uniform = [pixel * width] * 5
    found = verdict(_png(uniform, width, colour_type, bpp, filters))
    assert (found.width, found.height, found.colour) == (7, 5, pixel)
    assert found.describe() == f"7x5, all one colour (#{pixel.hex()})"
    for y, x in [(0, 0), (0, 6), (2, 3), (4, 0), (4, 6)]:
        rows = list(uniform)
        other = bytes((b + 1) & 0xFF for b in pixel)
        rows[y] = rows[y][: x * bpp] + other + rows[y][(x + 1) * bpp :]
        assert verdict(_png(rows, width, colour_type, bpp, filters)).colour is None, (y, x)


def test_a_virtual_screen_shows_more_than_one_colour_and_a_dark_one_does_not() -> None:
    shown = Picture(1080, 2400, b"\x20\x21\x24", b"\x40\x80\xc0", b"\x40\x80\xc0", None, 0)
    assert verdict(ScreenRenderer._encode_png(shown)).colour is None
    black = b"\x00\x00\x00"
    dark = verdict(ScreenRenderer._encode_png(Picture(1080, 2400, black, black, black, None, 0)))
    assert dark.describe() == "1080x2400, all one colour (#000000)"


@pytest.mark.parametrize(("data", "error"), [
    (b"GIF89a...", "not a PNG"),
    (_png([b"\x01\x02\x03"] * 2, 1, 2, 3, [0, 0])[:-30], "cut short"),
    (_png([b"\x01\x02\x03"] * 2, 1, 2, 3, [0, 0]).replace(b"\x08\x02\x00\x00\x00", b"\x08\x02\x00\x00\x01"),
     "interlace 1"),
    (_png([b"\x01\x02\x03"] * 2, 1, 2, 3, [0, 7]), "unknown PNG filter 7"),
])
def test_what_is_not_a_readable_png_says_why(data: bytes, error: str) -> None:
    with pytest.raises(PngError, match=error):
        verdict(data)


# ------------------------------------------------------------------ through the real adb server


async def test_the_self_test_passes_on_a_healthy_phone_and_fails_where_the_screen_or_shell_is_dead(
        fleet_factory: FleetFactory, adb_server: int) -> None:
    fine, dark, blank, hung = (VirtualPhone(f"SELFTEST{i:02d}") for i in range(4))
    dark.screen_on = False  # dark by its own timeout: woken first, no fault of the phone
    fleet = await fleet_factory(phones=[fine, dark, blank, hung])
    await fleet.set_fault(blank.adb_serial, "blank")
    await fleet.set_fault(hung.adb_serial, "hang")
    adb = AdbHost(port=adb_server)

    passed = await run_selftest(adb, fine.adb_serial, timeout_sec=5)
    assert passed.passed and [(c.name, c.passed) for c in passed.checks] == [
        ("boot_completed", True), ("shell", True), ("screenshot", True)]
    assert passed.checks[0].detail == "sys.boot_completed=1"
    assert passed.checks[2].detail == "1080x2400, more than one colour"
    assert (await run_selftest(adb, dark.adb_serial, timeout_sec=5)).passed and dark.screen_on

    failed = await run_selftest(adb, blank.adb_serial, timeout_sec=5)
    assert not failed.passed and [(c.name, c.passed, c.detail) for c in failed.checks][2] == (
        "screenshot", False, "1080x2400, all one colour (#000000)")
    stuck = await run_selftest(adb, hung.adb_serial, timeout_sec=0.5)
    assert [(c.passed, c.detail) for c in stuck.checks] == [(False, "no answer within 0.5 s")] * 3
    await hung.set_fault("none")


async def test_a_quarantined_phone_past_its_cool_down_is_released_by_its_self_test_end_to_end(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    agent = await agent_factory("pc", virtual=2, **FAST_LADDER)
    assert agent.fleet is not None
    fine, blank = agent.fleet.phones
    await blank.set_fault("blank")
    for phone in (fine, blank):
        device = await device_of(server, phone.adb_serial)
        await server.ok("POST", f"/api/devices/{device['id']}/quarantine", {"reason": "cracked?"}, expect=200)
    await server.ok("PATCH", "/api/fleet/policy", {"quarantine": {"cooldown_sec": 0, "selftest_every_sec": 1}})

    released = await state_becomes(server, fine.adb_serial, "idle")
    events = await timeline(server, released["id"], "selftest", "released")
    assert [(e["kind"], e["actor"], e["reason"]) for e in events] == [
        ("selftest", "selftest", "passed"), ("released", "selftest", "the self-test passed after the cool-down")]
    assert [c["name"] for c in events[0]["data"]["checks"]] == ["boot_completed", "shell", "screenshot"]

    kept = await device_of(server, blank.adb_serial)
    failed = await timeline(server, kept["id"], "selftest", count=2)  # asked again, failed again
    assert {e["reason"] for e in failed} == {"failed: screenshot"}
    assert failed[0]["data"]["checks"][2] == {"name": "screenshot", "passed": False,
                                              "detail": "1080x2400, all one colour (#000000)"}
    assert (await device_of(server, blank.adb_serial))["state"] == "quarantined"
    await blank.set_fault("none")  # the panel works again: the next self-test lets it back
    await state_becomes(server, blank.adb_serial, "idle")


async def test_new_fleet_thresholds_reach_the_probe_at_once_and_an_agents_own_still_win(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    agent = await agent_factory("pc", virtual=1, max_battery_temp_c=45.0)
    assert agent.fleet is not None and agent.tracker is not None
    phone = agent.fleet.phones[0]
    phone.battery_level = 42
    phone.state.battery_tenths_c = 430  # 43 °C: above the fleet's new 40, under this agent's own 45
    await server.ok("PATCH", "/api/fleet/policy", {"thresholds": {"min_battery": 50, "max_battery_temp_c": 40.0}})
    device = await state_becomes(server, phone.adb_serial, "unhealthy")
    detail = await server.ok("GET", f"/api/devices/{device['id']}")
    assert (detail["health_reason"], detail["broken"]) == ("battery 42% below 50%", ["battery 42% below 50%"])
    assert (agent.tracker.thresholds.min_battery, agent.tracker.thresholds.max_battery_temp_c) == (50, 45.0)
    kept = HealthThresholds.model_validate_json((agent.state_dir / "health_thresholds.json").read_text())
    assert (kept.min_battery, kept.max_battery_temp_c) == (50, 40.0), "the fleet's, kept for the next start"
