"""Fixtures for fleet-health tests: virtual phones on the session's real adb server, a real ``DeviceTracker``
probing them (what it tells its agent is recorded), and the agent's local control endpoint."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import adbutils
import aiohttp
import pytest

from phonefleet.agent.control import CONTROL_FILE
from phonefleet.agent.devices import DeviceTracker
from phonefleet.protocol import events as ev
from phonefleet.virtual import VirtualFleet, VirtualPhone
from tests.conftest import eventually


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
