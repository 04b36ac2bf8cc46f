"""Phones over ADB: hot-plug through ``track-devices``, and a health probe of every phone on an interval.

``track_devices`` is a blocking generator in adbutils, so it runs in a thread and feeds the loop;
when the adb server dies or restarts, the tracker starts it again and re-reads the device list.

Probes run concurrently (a semaphore bounds the adb connections they hold) on the event loop, one shell
round trip each (``health``). A phone that comes online is probed before the server hears of it, so a
phone that is unfit from the start never looks fit. The server hears a probe's result only when it
matters (``health.worth_reporting``). Others follow every phone's state as it changes (``watch``, ``wait_for``)
and probe one phone at once (``probe_now``): the recovery ladder judges its rungs so.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import adbutils

from phonefleet.agent import health
from phonefleet.agent.adbhost import AdbHost, AdbHostError
from phonefleet.agent.phone import AdbPhone
from phonefleet.protocol import events as ev
from phonefleet.protocol.health import HealthThresholds

log = logging.getLogger(__name__)

REPORT_EVERY_SEC = 1.0
"""While a probe round waits for slow phones, what the others found is reported at this pace."""
N = TypeVar("N", int, float)


@dataclass
class PhoneState:
    serial: str
    status: str  # adb's word: device, offline, unauthorized, ...; "gone" once adb no longer lists it
    model: str | None = None
    android_version: str | None = None
    tags: list[str] = field(default_factory=list)
    facts: health.ProbeFacts | None = None
    """The last probe's facts while the phone has been ``device`` (None until its first probe)."""
    failure: str | None = None
    """Why the last probe read nothing (a timeout, an adb error)."""
    probe_sec: float | None = None
    epoch: int = 0
    """Bumped by every status change: a probe started before it is stale."""
    probing: int | None = None
    """The epoch a probe is running for, if one is."""
    reported: ev.DeviceReport | None = None
    """What the server last heard of this phone."""
    clock_offset: float | None = None
    """How far the phone's clock is ahead of this host's (seconds), as the last probe that read it found."""

    @property
    def online(self) -> bool:
        return self.status not in health.OFFLINE_STATES

    def report(self, limits: HealthThresholds) -> ev.DeviceReport:
        """What the server hears of this phone; what the phone said is cut to the protocol's bounds."""
        facts = self.facts or health.ProbeFacts()
        broken = [b[:200] for b in health.assess(self.status, self.facts, self.failure, self.probe_sec, limits)]
        reason = "; ".join(broken)
        return ev.DeviceReport(
            serial=self.serial, online=self.online, healthy=self.status == "device" and not broken,
            health_reason=reason[:500] or None, model=_cut(self.model, 200),
            android_version=_cut(self.android_version, 50), battery=_clamp(facts.battery, 0, 100),
            screen_on=facts.screen_on, tags=self.tags,
            adb_state=None if self.status == "gone" else self.status[:100], boot_completed=facts.boot_completed,
            battery_temp_c=_clamp(facts.battery_temp_c, -50, 150), charging=facts.charging,
            screen_locked=facts.screen_locked, data_free_mb=_clamp(facts.data_free_mb, 0, 1_000_000_000),
            probe_ms=None if self.probe_sec is None else round(min(self.probe_sec * 1000, 3_600_000), 1),
            broken=broken[:20])


def _cut(text: str | None, limit: int) -> str | None:
    return text[:limit] if text else text


def _clamp(value: N | None, low: N, high: N) -> N | None:
    return None if value is None else max(low, min(high, value))


Changed = Callable[[list[ev.DeviceReport], bool], Awaitable[None]]
"""What the server should hear of the phones that changed (``True``: of every phone, a full list)."""
Watcher = Callable[[PhoneState], None]
"""Told of a phone whose adb state changed or whose probe ended (it must not block)."""


class DeviceTracker:
    def __init__(self, client: adbutils.AdbClient, on_change: Changed, *, probe_sec: float = 15.0,
                 probe_timeout_sec: float = 10.0, max_probes: int = 32,
                 thresholds: HealthThresholds | None = None,
                 on_adb_restart: Callable[[], Awaitable[None]] | None = None) -> None:
        """``on_adb_restart`` runs when the adb server went away (it may start it again)."""
        self.client = client
        self.on_change = on_change
        self.on_adb_restart = on_adb_restart
        self.probe_sec = probe_sec
        self.probe_timeout_sec = probe_timeout_sec
        self.thresholds = thresholds or HealthThresholds()
        self.adb = AdbHost(client.host, client.port)
        self.phones: dict[str, PhoneState] = {}
        self.restarts = 0
        self.rounds = 0
        """Probe rounds completed (tests and benchmarks wait on it)."""
        self._gate = asyncio.Semaphore(max_probes)
        self._watchers: list[Watcher] = []
        self._touched = asyncio.Event()
        """Set (and replaced) whenever a phone's state changes or a probe of it ends: ``wait_for`` waits on it."""
        self._tasks: list[asyncio.Task[None]] = []
        self._hotplug: set[asyncio.Task[None]] = set()
        self._stop = threading.Event()

    async def start(self) -> None:
        """Read (and probe) the phones there are now, then follow hot-plug and probe on the interval."""
        await self._resync()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._track(), name="adb-track"),
                       loop.create_task(self._probe_loop(), name="adb-probe")]

    async def stop(self) -> None:
        self._stop.set()
        tasks = [*self._tasks, *self._hotplug]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def phone(self, serial: str) -> AdbPhone:
        return AdbPhone(self.client.device(serial), self.adb)

    def phone_clock(self, serial: str) -> float | None:
        """The phone's clock now (epoch seconds) as its probes found it, without asking it; None until known."""
        phone = self.phones.get(serial)
        if phone is None or phone.clock_offset is None:
            return None
        return time.time() + phone.clock_offset

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher`` with every phone whose adb state changes or whose probe ends, from now on."""
        self._watchers.append(watcher)

    def _touch(self, phone: PhoneState) -> None:
        touched, self._touched = self._touched, asyncio.Event()
        touched.set()
        for watcher in self._watchers:
            try:
                watcher(phone)
            except Exception:  # a watcher's bug must not stop hot-plug or probes
                log.exception("device watcher failed", extra={"serial": phone.serial})

    async def wait_for(self, serial: str, check: Callable[[PhoneState], bool]) -> PhoneState:
        """The phone once ``check`` passes on it (at once if it does now); the caller bounds the wait."""
        while True:
            touched = self._touched
            phone = self.phones.get(serial)
            if phone is not None and check(phone):
                return phone
            await touched.wait()

    async def probe_now(self, serial: str) -> PhoneState | None:
        """Probe one phone now, even while a probe round is at it; the server hears what matters. The phone as it
        is afterwards (None if adb never listed it)."""
        phone = self.phones.get(serial)
        if phone is not None and phone.status == "device" and await self._probe(phone, force=True):
            changed = self._worth_reporting([phone])
            if changed:
                await self._emit(changed)
        return phone

    def reports(self, serials: Iterable[str] | None = None) -> list[ev.DeviceReport]:
        """What the server is to hear of these phones (all by default), remembered as what it last heard."""
        phones = self.phones.values() if serials is None else [self.phones[s] for s in serials if s in self.phones]
        return self._sent(phones)

    def set_thresholds(self, thresholds: HealthThresholds) -> list[ev.DeviceReport]:
        """New thresholds in force: the reports of the phones whose health they change (judged again, no probe)."""
        self.thresholds = thresholds
        return self._sent(self._worth_reporting(self.phones.values()))

    def _sent(self, phones: Iterable[PhoneState]) -> list[ev.DeviceReport]:
        reports = []
        for phone in phones:
            phone.reported = phone.report(self.thresholds)
            reports.append(phone.reported)
        return reports

    def _worth_reporting(self, phones: Iterable[PhoneState]) -> list[PhoneState]:
        return [p for p in phones if health.worth_reporting(p.reported, p.report(self.thresholds))]

    async def _emit(self, phones: list[PhoneState], full: bool = False) -> None:
        await self.on_change(self._sent(phones), full)

    # ------------------------------------------------------------------ hot-plug

    async def _track(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

        def put(item: tuple[str, str] | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under this thread: the agent is gone
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def pump() -> None:
            try:
                for event in self.client.track_devices():
                    if self._stop.is_set():
                        return
                    put((event.serial, event.status if event.present else "gone"))
            except Exception as exc:  # the adb server died or restarted
                log.info("track-devices ended", extra={"error": str(exc)})
            put(None)

        backoff = 0.2
        first = True
        while True:
            if not first:  # start() has just read the list
                await self._resync()
            first = False
            thread = threading.Thread(target=pump, name="adb-track", daemon=True)
            thread.start()
            while (item := await queue.get()) is not None:
                backoff = 0.2
                await self._apply(*item)
            self.restarts += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            if self.on_adb_restart is not None:
                try:
                    await self.on_adb_restart()  # start the adb server again if it died
                except Exception as exc:
                    log.warning("adb server restart failed", extra={"error": str(exc)})

    async def _resync(self) -> None:
        """Read the whole list (after a start or restart of the adb server), marking missing phones gone;
        the phones online are probed (all at once) before the full list goes out."""
        try:
            listed = await asyncio.to_thread(self.client.list)
        except Exception as exc:
            log.info("adb list failed", extra={"error": str(exc)})
            return
        seen = {d.serial: d.state for d in listed}
        for serial, state in seen.items():
            self._set_status(serial, state)
        for serial in [s for s in self.phones if s not in seen]:
            self._set_status(serial, "gone")
        await asyncio.gather(*(self._probe(p) for p in self.phones.values() if p.status == "device"))
        await self._emit(list(self.phones.values()), full=True)

    async def _apply(self, serial: str, status: str) -> None:
        phone = self._set_status(serial, status)
        if phone is None:
            return
        if status == "device":  # heard of once probed: a phone unfit from the start never looks fit
            task = asyncio.create_task(self._probe_then_report(phone), name=f"probe-{serial}")
            self._hotplug.add(task)
            task.add_done_callback(self._hotplug.discard)
        else:
            await self._emit([phone])

    def _set_status(self, serial: str, status: str) -> PhoneState | None:
        """The phone's new adb state, or None when it is the one already known."""
        phone = self.phones.get(serial)
        if phone is None:
            phone = self.phones[serial] = PhoneState(serial, status)
        elif phone.status == status:
            return None
        phone.status = status
        phone.epoch += 1
        self.adb.forget(serial)
        phone.facts, phone.failure, phone.probe_sec = None, None, None
        self._touch(phone)
        return phone

    # ------------------------------------------------------------------ probes

    async def _probe_then_report(self, phone: PhoneState) -> None:
        if await self._probe(phone):
            await self._emit([phone])

    async def _probe(self, phone: PhoneState, *, force: bool = False) -> bool:
        """Probe one phone; True when its facts were recorded (False: it changed state meanwhile, or a probe
        was already running and not ``force``)."""
        epoch = phone.epoch
        if phone.probing == epoch and not force:
            return False
        phone.probing = epoch  # a probe of an earlier epoch may still run: its answer will be dropped
        try:
            async with self._gate:
                started = time.monotonic()
                facts, failure = None, None
                # A probe slower than the threshold breaks it whatever it answers later: waiting longer only
                # keeps a hung phone in distribution longer.
                limit = min(self.probe_timeout_sec, self.thresholds.max_probe_sec)
                try:
                    async with asyncio.timeout(limit):
                        output = await self.adb.shell(phone.serial, health.PROBE_COMMAND)
                    answered = time.time()
                    facts = health.parse_probe(output.decode("utf-8", "replace"))
                    # The phone read its clock somewhere between the ask and the answer; taken as read at the
                    # answer, a run's logcat span starts up to one probe early, never late: a slow probe on a
                    # loaded host must not cut the first seconds (a short run's crash) out of the span.
                    if facts.phone_time is not None:
                        phone.clock_offset = facts.phone_time - answered
                except TimeoutError:
                    failure = f"probe timed out after {limit:g} s"
                except (AdbHostError, OSError, health.ProbeOutputError) as exc:
                    failure = f"probe failed: {exc}"[:300]
                took = time.monotonic() - started
        finally:
            if phone.probing == epoch:
                phone.probing = None
        if phone.epoch != epoch:
            return False
        phone.facts, phone.failure, phone.probe_sec = facts, failure, None if failure else took
        if facts is not None:
            phone.model = facts.model or phone.model
            phone.android_version = facts.android_version or phone.android_version
        self._touch(phone)
        return True

    async def probe_all(self) -> None:
        """One round: every phone online probed at once; what matters is reported as probes end (at most
        every ``REPORT_EVERY_SEC``), so one hung phone does not hold back the news of the others."""
        pending = {asyncio.create_task(self._probe(p)): p for p in self.phones.values() if p.status == "device"}
        waiting: set[asyncio.Task[bool]] = set(pending)
        try:
            while waiting:
                done, waiting = await asyncio.wait(waiting, timeout=REPORT_EVERY_SEC)
                changed = self._worth_reporting(pending[t] for t in done if t.result())
                if changed:
                    await self._emit(changed)
        finally:  # stopped mid-round: no probe outlives the tracker
            for task in waiting:
                task.cancel()
        self.rounds += 1

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.probe_all()
            except Exception:  # a bug, not a phone: the next round tries again
                log.exception("probe round failed")
            await asyncio.sleep(max(0.0, started + self.probe_sec - loop.time()))
