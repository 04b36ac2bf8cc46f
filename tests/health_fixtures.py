"""Fixtures for fleet-health tests: virtual phones on the session's real adb server, a real ``DeviceTracker``
probing them (what it tells its agent is recorded), the agent's local control endpoint, and what a real server
records of a phone (its state, its timeline) and a real agent of its recovery rungs."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import adbutils
import aiohttp
import pytest

from phonefleet.agent.agent import Agent
from phonefleet.agent.control import CONTROL_FILE
from phonefleet.agent.devices import DeviceTracker
from phonefleet.agent.recovery import RungRecord
from phonefleet.protocol import events as ev
from phonefleet.virtual import VirtualFleet, VirtualPhone
from tests.conftest import RunningServer, eventually

FAST_LADDER: dict[str, Any] = {
    "probe_sec": 0.3, "probe_timeout_sec": 1.0, "recovery_grace_sec": 1.0, "recovery_boot_grace_sec": 1.0,
    "recovery_reconnect_timeout_sec": 5.0, "recovery_usb_reset_timeout_sec": 5.0,
    "recovery_reboot_timeout_sec": 10.0, "recovery_power_cycle_timeout_sec": 10.0}
"""Agent settings that climb the ladder within seconds (the defaults wait 30 s and give a rung minutes)."""


class Heard:
    """What a tracker told its agent: every update in order, and the latest report of each phone."""

    def __init__(self) -> None:
        self.updates: list[tuple[list[ev.DeviceReport], bool]] = []
        self.latest: dict[str, ev.DeviceReport] = {}

    async def __call__(self, reports: list[ev.DeviceReport], full: bool) -> None:
        self.updates.append((reports, full))
        for report in reports:
            self.latest[report.serial] = report

    def of(self, phone: VirtualPhone) -> list[ev.DeviceReport]:
        """Every report of this phone, in order."""
        return [r for reports, _ in self.updates for r in reports if r.serial == phone.adb_serial]

    async def until(self, phone: VirtualPhone, check: Callable[[ev.DeviceReport], bool], timeout: float = 10.0,
                    *, since: int = 0) -> ev.DeviceReport:
        """The phone's latest report once it passes ``check`` (waits for it); only reports after the first
        ``since`` of this phone count."""

        async def passed() -> ev.DeviceReport | None:
            reports = self.of(phone)[since:]
            return reports[-1] if reports and check(reports[-1]) else None

        found = await eventually(passed, timeout=timeout, interval=0.02)
        assert found is not None
        return found


FleetFactory = Callable[..., Awaitable[VirtualFleet]]
TrackerFactory = Callable[..., Awaitable[tuple[DeviceTracker, Heard]]]


@pytest.fixture
async def fleet_factory(adb_server: int) -> AsyncIterator[FleetFactory]:
    """Virtual phones connected to the session's adb server; stopped (and disconnected) after the test."""
    started: list[VirtualFleet] = []

    async def factory(count: int = 1, *, phones: list[VirtualPhone] | None = None) -> VirtualFleet:
        fleet = VirtualFleet(count, phones=phones, adb_port=adb_server)
        started.append(fleet)
        await fleet.start()
        return fleet

    yield factory
    for fleet in started:
        await fleet.stop()


@pytest.fixture
async def tracker_factory(adb_server: int) -> AsyncIterator[TrackerFactory]:
    """A real tracker on the session's adb server (it sees every phone there: tests look at their own)."""
    started: list[DeviceTracker] = []

    async def factory(**settings: Any) -> tuple[DeviceTracker, Heard]:
        heard = Heard()
        values: dict[str, Any] = {"probe_sec": 0.5, "probe_timeout_sec": 2.0, **settings}
        tracker = DeviceTracker(adbutils.AdbClient(host="127.0.0.1", port=adb_server), heard, **values)
        started.append(tracker)
        await tracker.start()
        return tracker, heard

    yield factory
    for tracker in started:
        await tracker.stop()


async def control_request(state_dir: Path, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to a running agent's loopback control endpoint, as ``phonefleet-agent`` makes it."""
    info = json.loads((state_dir / CONTROL_FILE).read_text())
    headers = {"Authorization": f"Bearer {info['token']}"}
    async with aiohttp.ClientSession() as http, http.request(
            method, f"http://127.0.0.1:{info['port']}{path}", json=body, headers=headers) as response:
        return response.status, await response.json()


def quick_boot(*phones: VirtualPhone) -> None:
    """Reboots that take a fraction of a second (back before the adb server's first retry, 0.25 s after a drop)."""
    for phone in phones:
        phone.boot_time, phone.boot_settle_sec, phone.bootloop_up_sec = 0.1, 0.3, 1.0


async def rungs_ended(agent: Agent, check: Callable[[list[RungRecord]], bool], timeout: float = 30.0
                      ) -> list[RungRecord]:
    """The agent's rungs once ``check`` passes on them (every rung that ended, in order)."""
    assert agent.recovery is not None
    async with asyncio.timeout(timeout):
        return list(await agent.recovery.wait_ended(check))


def of_phone(records: list[RungRecord], phone: VirtualPhone) -> list[tuple[str, str]]:
    return [(str(r.rung), r.outcome) for r in records if r.serial == phone.adb_serial]


async def device_of(server: RunningServer, serial: str) -> dict[str, Any]:
    """The server's listing of one phone (``GET /api/devices``)."""
    (found,) = [d for d in await server.ok("GET", "/api/devices") if d["serial"] == serial]
    return dict(found)


async def state_becomes(server: RunningServer, serial: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        device = await device_of(server, serial)
        return device if device["state"] == state else None

    found = await eventually(reached, timeout=timeout, interval=0.1)
    assert found is not None
    return found


async def timeline(server: RunningServer, device_id: int, *kinds: str, count: int = 1,
                   timeout: float = 15.0) -> list[dict[str, Any]]:
    """The phone's timeline, oldest first (only ``kinds`` if given), once it holds at least ``count`` entries
    (the agent's reports reach the server through its outbox, a moment later)."""
    query = "&".join(f"kind={k}" for k in kinds)

    async def written() -> list[dict[str, Any]] | None:
        body = await server.ok("GET", f"/api/devices/{device_id}/events?limit=200&{query}")
        return list(reversed(body["items"])) if len(body["items"]) >= count else None

    found = await eventually(written, timeout=timeout, interval=0.1)
    assert found is not None
    return found
