"""The recovery ladder's rungs as mechanisms: each does its one thing to a phone, then says whether the phone
probes healthy afterwards (the health probe judges, as it judges every phone).

reconnect: a network phone is ``adb disconnect``ed and ``adb connect``ed; a USB phone's transport is kicked
(``host-serial:SERIAL:reconnect``). usb_reset: ``USBDEVFS_RESET`` on its device node (``usbports``). reboot:
``adb reboot``, then sys.boot_completed=1. power_cycle: the operator's command (``uhubctl ...``), run without a
shell. Every rung is bounded by its timeout, its check included. When to climb, the reboot budget and giving
up are the policy's (``recovery``).
"""

import asyncio
import contextlib
import logging
import shlex
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from phonefleet.agent import health, usbports
from phonefleet.agent.adbhost import AdbHost, AdbHostError
from phonefleet.agent.devices import DeviceTracker, PhoneState
from phonefleet.protocol.enums import RecoveryRung
from phonefleet.protocol.health import RecoveryOutcome

log = logging.getLogger(__name__)

PLACEHOLDERS = frozenset({"serial", "hub", "port", "busnum", "devnum", "devpath"})
"""What a power-cycle command may name: the phone's serial, and where it is plugged in."""
BOOT_POLL_SEC = 1.0
"""While a phone boots, it is probed this often until sys.boot_completed=1 (as ``adb wait-for-device`` polls)."""
SETTLE_SEC = 5.0
"""After a reconnect or a reset, how long to wait for adb to show the phone leaving and coming back before
probing it anyway (a quick USB re-attach may show no change at all)."""
RECONNECT_EVERY_SEC = 5.0
"""A network phone this agent disconnected and could not connect again is tried again this often."""
CONNECTED = ("connected to", "already connected to")


@dataclass(frozen=True)
class RungSettings:
    timeouts: dict[RecoveryRung, float]
    power_cycle_command: str | None = None
    power_cycle_ports: dict[str, dict[str, str]] = field(default_factory=dict)
    usb_sysfs: Path = usbports.SYSFS_USB
    usb_dev: Path = usbports.DEV_USB


@dataclass(frozen=True)
class RungResult:
    outcome: RecoveryOutcome
    detail: str | None = None


def ladder_problem(phone: PhoneState | None) -> str | None:
    """What is wrong with the phone that a rung may fix (None: nothing). Offline, unauthorized, a probe that timed
    out or failed, a boot that never completes; thresholds (battery, heat, space, a slow probe) no rung fixes, and
    a phone adb no longer lists is unplugged."""
    if phone is None or phone.status == "gone":
        return None
    if phone.status == "offline":
        return "offline"
    if phone.status == "unauthorized":
        return health.UNAUTHORIZED
    if phone.status != "device":
        return None
    if phone.failure is not None:
        return phone.failure
    if phone.facts is not None and phone.facts.boot_completed is False:
        return health.NOT_BOOTED
    return None


def well(phone: PhoneState | None) -> bool:
    """Probed on adb with nothing a rung could fix (it may still break a threshold)."""
    return phone is not None and phone.status == "device" and phone.facts is not None and ladder_problem(phone) is None


@dataclass
class _Attempt:
    started: float = field(default_factory=time.monotonic)
    last: str | None = None
    """What was wrong when last looked at (said if the rung runs out of time)."""


class Rungs:
    def __init__(self, tracker: DeviceTracker, adb: AdbHost, settings: RungSettings) -> None:
        self.tracker = tracker
        self.adb = adb
        self.settings = settings
        self.dropped: dict[str, float] = {}
        """Network phones disconnected by a reconnect that could not connect them again: serial -> next try."""
        self._actions: dict[RecoveryRung, Callable[[str, _Attempt], Awaitable[RungResult]]] = {
            RecoveryRung.reconnect: self._reconnect, RecoveryRung.usb_reset: self._usb_reset,
            RecoveryRung.reboot: self._reboot, RecoveryRung.power_cycle: self._power_cycle}

    # ------------------------------------------------------------------ before a rung

    async def skipped(self, serial: str, rung: RecoveryRung) -> str | None:
        """Why ``rung`` cannot run on this phone (found before it starts), or None."""
        if rung is RecoveryRung.usb_reset:
            if usbports.is_network_serial(serial):
                return f"not a USB phone ({serial} is a network address)"
            port = usbports.find(serial, self.settings.usb_sysfs, self.settings.usb_dev)
            if port is None:
                return f"no USB device with serial {serial} under {self.settings.usb_sysfs}"
            if not usbports.writable(port.node):
                return f"{port.node} is not writable by this user (a udev rule can allow it)"
        elif rung is RecoveryRung.reboot:
            try:  # the adb server's word, not the tracker's (which hears of a change a moment later)
                await self.adb.query(f"host-serial:{serial}:get-state")
            except AdbHostError as exc:
                return f"adb cannot reach the phone ({str(exc).splitlines()[0] if str(exc) else 'no answer'})"
        elif rung is RecoveryRung.power_cycle:
            if self.settings.power_cycle_command is None:
                return "no power_cycle_command configured"
            missing = self.power_cycle_argv(serial)
            if isinstance(missing, str):
                return f"no {{{missing}}} for {serial}: set it in power_cycle_ports (it is not on this PC's USB)"
        return None

    def power_cycle_argv(self, serial: str) -> list[str] | str:
        """The command line for this phone, or the first placeholder nothing fills."""
        assert self.settings.power_cycle_command is not None
        words = shlex.split(self.settings.power_cycle_command)
        wanted = {name for word in words for _, name, _, _ in string.Formatter().parse(word) if name}
        values = {"serial": serial}
        if wanted - values.keys() - self.settings.power_cycle_ports.get(serial, {}).keys():
            port = None if usbports.is_network_serial(serial) else usbports.find(
                serial, self.settings.usb_sysfs, self.settings.usb_dev)
            values.update(port.placeholders() if port is not None else {})
        values.update(self.settings.power_cycle_ports.get(serial, {}))
        for name in sorted(wanted):
            if name not in values:
                return name
        return [word.format_map(values) for word in words]

    # ------------------------------------------------------------------ running one

    async def run(self, serial: str, rung: RecoveryRung) -> RungResult:
        """Do the rung, then check the phone; never longer than the rung's timeout."""
        timeout = self.settings.timeouts[rung]
        attempt = _Attempt()
        try:
            async with asyncio.timeout(timeout):
                return await self._actions[rung](serial, attempt)
        except TimeoutError:
            why = f": {attempt.last}" if attempt.last else ""
            return RungResult("timed_out", f"not healthy within {timeout:g} s{why}"[:1000])
        except (AdbHostError, OSError) as exc:
            return RungResult("failed", (str(exc) or type(exc).__name__)[:1000])
        except Exception as exc:  # a bug, not the phone: still an ended rung, so the phone is not left recovering
            log.exception("rung failed unexpectedly", extra={"serial": serial, "rung": str(rung)})
            return RungResult("failed", f"{type(exc).__name__}: {exc}"[:1000])

    def _epoch(self, serial: str) -> int:
        phone = self.tracker.phones.get(serial)
        return phone.epoch if phone is not None else -1

    async def _left_and_came_back(self, serial: str, epoch: int, bound: float | None) -> None:
        """Wait (at most ``bound`` s; None: the rung's whole time) for adb to show the phone change state."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await self.tracker.wait_for(serial, lambda p: p.epoch != epoch)

    async def _healthy(self, serial: str, attempt: _Attempt, *, booting: bool) -> RungResult:
        """Probe the phone once it is on adb: healed, or failed with what is wrong. ``booting``: a phone that is
        off adb or not booted yet is waited for (the rung's timeout ends the wait)."""
        while True:
            attempt.last = attempt.last or "not back on adb"
            await self.tracker.wait_for(serial, lambda p: p.status == "device")
            phone = await self.tracker.probe_now(serial)
            if well(phone):
                return RungResult("healed", f"healthy after {time.monotonic() - attempt.started:.1f} s")
            problem = ladder_problem(phone)
            if problem is None:  # not probed (it changed state meanwhile), or not on adb: look again
                continue
            attempt.last = problem
            if not booting or problem != health.NOT_BOOTED:
                return RungResult("failed", problem[:1000])
            await asyncio.sleep(BOOT_POLL_SEC)

    # ------------------------------------------------------------------ the rungs

    async def _reconnect(self, serial: str, attempt: _Attempt) -> RungResult:
        epoch = self._epoch(serial)
        if usbports.is_network_serial(serial):
            with contextlib.suppress(AdbHostError):  # not listed any more: connecting is all it takes
                await self.adb.query(f"host:disconnect:{serial}")
            answer = await self.adb.query(f"host:connect:{serial}")
            if not answer.startswith(CONNECTED):
                self.dropped.setdefault(serial, time.monotonic() + RECONNECT_EVERY_SEC)
                return RungResult("failed", answer[:1000] or "adb connect failed")
            self.dropped.pop(serial, None)
        else:
            await self.adb.query(f"host-serial:{serial}:reconnect")
        await self._left_and_came_back(serial, epoch, SETTLE_SEC)
        return await self._healthy(serial, attempt, booting=False)

    async def _usb_reset(self, serial: str, attempt: _Attempt) -> RungResult:
        port = usbports.find(serial, self.settings.usb_sysfs, self.settings.usb_dev)
        if port is None:
            return RungResult("failed", f"no USB device with serial {serial} any more")
        epoch = self._epoch(serial)
        await asyncio.to_thread(usbports.reset, port.node)
        await self._left_and_came_back(serial, epoch, SETTLE_SEC)
        return await self._healthy(serial, attempt, booting=False)

    async def _reboot(self, serial: str, attempt: _Attempt) -> RungResult:
        epoch = self._epoch(serial)
        await self.adb.start(serial, "reboot:")
        attempt.last = "still on adb after adb reboot"
        await self.tracker.wait_for(serial, lambda p: p.epoch != epoch)  # it went down
        attempt.last = "not back on adb"
        return await self._healthy(serial, attempt, booting=True)

    async def _power_cycle(self, serial: str, attempt: _Attempt) -> RungResult:
        argv = self.power_cycle_argv(serial)
        if isinstance(argv, str):
            return RungResult("skipped", f"no {{{argv}}} for {serial}")
        epoch = self._epoch(serial)
        process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                       stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await process.communicate()
        finally:
            if process.returncode is None:  # out of time: the command goes too
                process.kill()
                await process.wait()
        if process.returncode != 0:
            said = output.decode("utf-8", "replace").strip()[-300:]
            return RungResult("failed", f"{shlex.join(argv)[:300]} exited with {process.returncode}: {said}")
        await self._left_and_came_back(serial, epoch, SETTLE_SEC)
        return await self._healthy(serial, attempt, booting=True)

    # ------------------------------------------------------------------ upkeep

    async def connect_dropped(self) -> None:
        """Network phones a reconnect left off adb are connected again when they answer (as adb itself retries
        a phone that dropped): a phone given up on comes back when it is reachable again."""
        now = time.monotonic()
        for serial, due in list(self.dropped.items()):
            phone = self.tracker.phones.get(serial)
            if phone is not None and phone.status != "gone":
                del self.dropped[serial]
                continue
            if due > now:
                continue
            self.dropped[serial] = now + RECONNECT_EVERY_SEC
            with contextlib.suppress(AdbHostError, OSError):
                async with asyncio.timeout(RECONNECT_EVERY_SEC):
                    if (await self.adb.query(f"host:connect:{serial}")).startswith(CONNECTED):
                        log.info("phone connected again", extra={"serial": serial})
                        del self.dropped[serial]
