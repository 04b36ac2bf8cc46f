"""The recovery ladder's policy: when a phone gets it, one rung after another until the phone probes healthy,
at most a few reboots a day, and giving up (the server quarantines the phone) instead of rebooting in a loop.

A phone that has been offline, unresponsive (its probe timed out or failed) or unauthorized for
``grace_sec`` (stuck booting: ``boot_grace_sec``) gets the ladder by itself: reconnect, usb_reset, reboot,
power_cycle (``rungs``), stopping at the first after which it probes healthy. One that none heals, or whose
reboot budget is spent, is reported with ``give_up`` and left alone until it is healthy again or an operator
asks for a rung. Every rung, skipped ones included, is reported started and ended through the outbox; while one
runs, the phone's worker starts no work on it. The reboots and the phones given up on are kept in the agent's
SQLite (beside the outbox), so a restart neither resets the budget nor starts over on a phone given up on.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from phonefleet.agent import health
from phonefleet.agent.devices import DeviceTracker, PhoneState
from phonefleet.agent.outbox import Outbox
from phonefleet.agent.rungs import RungResult, Rungs, ladder_problem, well
from phonefleet.protocol.enums import RecoveryRung
from phonefleet.protocol.health import DEVICE_RECOVERY, DeviceRecover, RecoveryOutcome, RecoveryReport

log = logging.getLogger(__name__)

LADDER = (RecoveryRung.reconnect, RecoveryRung.usb_reset, RecoveryRung.reboot, RecoveryRung.power_cycle)
"""Gentlest first."""
DAY_SEC = 86_400.0
AGENT = "agent"
"""``by`` of the rungs the ladder climbs by itself."""
ALREADY_RUNNING = "a rung is already running"
HISTORY = 1000


@dataclass(frozen=True)
class LadderSettings:
    enabled: bool = True
    grace_sec: float = 30.0
    boot_grace_sec: float = 120.0
    max_reboots_per_day: int = 3
    max_concurrent: int = 4


@dataclass(frozen=True)
class RungRecord:
    """One rung as it ended (tests and benchmarks read them; the server hears them as reports)."""

    serial: str
    rung: RecoveryRung
    by: str
    outcome: RecoveryOutcome
    detail: str | None
    took_sec: float
    give_up: bool
    ended_at: float
    """``time.time()`` when it ended."""


class RecoveryStore:
    """The ladder's reboots (for the 24-hour budget) and the phones it gave up on, in the outbox's database."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        with outbox.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS recovery_reboots (serial TEXT NOT NULL, at REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS recovery_given_up (serial TEXT PRIMARY KEY, detail TEXT NOT NULL,"
                       " at REAL NOT NULL)")

    def reboots(self, serial: str, *, now: float | None = None) -> int:
        """Reboots of this phone in the last 24 hours."""
        since = (now or time.time()) - DAY_SEC
        with self.outbox.transaction() as db:
            row = db.execute("SELECT count(*) FROM recovery_reboots WHERE serial = ? AND at > ?",
                             (serial, since)).fetchone()
        return int(row[0])

    def add_reboot(self, serial: str, *, now: float | None = None) -> None:
        at = now or time.time()
        with self.outbox.transaction() as db:
            db.execute("DELETE FROM recovery_reboots WHERE at <= ?", (at - DAY_SEC,))
            db.execute("INSERT INTO recovery_reboots (serial, at) VALUES (?, ?)", (serial, at))

    def given_up(self) -> dict[str, str]:
        with self.outbox.transaction() as db:
            rows = db.execute("SELECT serial, detail FROM recovery_given_up").fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def give_up(self, serial: str, detail: str) -> None:
        with self.outbox.transaction() as db:
            db.execute("INSERT INTO recovery_given_up (serial, detail, at) VALUES (?, ?, ?) ON CONFLICT (serial)"
                       " DO UPDATE SET detail = excluded.detail, at = excluded.at", (serial, detail, time.time()))

    def forgive(self, serial: str) -> None:
        with self.outbox.transaction() as db:
            db.execute("DELETE FROM recovery_given_up WHERE serial = ?", (serial,))


Report = Callable[[str, BaseModel], None]
Hold = Callable[[str, str | None], None]
"""Tell the phone's worker who holds the phone now (None: nobody; it may take work again)."""


class Recovery:
    def __init__(self, tracker: DeviceTracker, rungs: Rungs, store: RecoveryStore, settings: LadderSettings, *,
                 report: Report, hold: Hold, ignored: Callable[[str], bool] = lambda _serial: False) -> None:
        """``ignored``: phones the ladder leaves alone (another agent drives them)."""
        self.tracker = tracker
        self.rungs = rungs
        self.store = store
        self.settings = settings
        self.report = report
        self.hold = hold
        self.ignored = ignored
        self.given_up = store.given_up()
        """Phones the ladder gave up on (serial -> why), left alone until healthy or an operator asks."""
        self.history: list[RungRecord] = []
        self.busy: dict[str, str] = {}
        """Phones a ladder or an operator's rung holds now: serial -> who."""
        self._bad: dict[str, float] = {}
        """Since when (``time.monotonic()``) each phone has been bad in a way a rung may fix, without a break."""
        self._ladders: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Semaphore(settings.max_concurrent)
        self._ticker: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        tracker.watch(self.observe)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for phone in self.tracker.phones.values():
            self.observe(phone)
        self._ticker = asyncio.create_task(self._tick_loop(), name="recovery")

    async def stop(self) -> None:
        """Stop every rung where it is (the server ends a rung left running when this agent says hello again)."""
        tasks = [t for t in (self._ticker, *self._ladders.values(), *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ when

    def observe(self, phone: PhoneState) -> None:
        """A phone's state changed or a probe of it ended: start, keep or end its bad spell."""
        serial = phone.serial
        if ladder_problem(phone) is not None:
            self._bad.setdefault(serial, time.monotonic())
        elif phone.status == "gone" or well(phone):
            self._bad.pop(serial, None)
            if well(phone) and serial in self.given_up:
                log.info("phone healthy again: the ladder may climb again", extra={"serial": serial})
                self.forgive(serial)
        # otherwise (not probed yet, an adb state no rung is for): the spell, if any, goes on

    def _new_spell(self, serial: str) -> None:
        """After a rung: a phone still bad waits a whole grace again before a ladder."""
        if ladder_problem(self.tracker.phones.get(serial)) is not None:
            self._bad[serial] = time.monotonic()
        else:
            self._bad.pop(serial, None)

    def forgive(self, serial: str) -> None:
        if self.given_up.pop(serial, None) is not None:
            self.store.forgive(serial)

    def _grace(self, problem: str) -> float:
        grace = self.settings.grace_sec
        return max(grace, self.settings.boot_grace_sec) if problem == health.NOT_BOOTED else grace

    def due(self) -> list[str]:
        """Phones bad for longer than their grace that no ladder holds and none gave up on."""
        now = time.monotonic()
        found = []
        for serial, since in self._bad.items():
            problem = ladder_problem(self.tracker.phones.get(serial))
            if problem is None or now - since < self._grace(problem):
                continue
            if serial in self.busy or serial in self._ladders or serial in self.given_up or self.ignored(serial):
                continue
            found.append(serial)
        return found

    async def run_once(self) -> list[str]:
        """Start the ladders due (returns their phones) and connect again the network phones a reconnect left
        off adb."""
        started = self.due() if self.settings.enabled else []
        for serial in started:
            self._ladders[serial] = asyncio.create_task(self._ladder(serial), name=f"ladder-{serial}")
        await self.rungs.connect_dropped()
        return started

    async def _tick_loop(self) -> None:
        every = max(0.05, min(1.0, self.settings.grace_sec / 4))
        while True:
            try:
                await self.run_once()
            except Exception:  # a bug, not a phone: the next tick tries again
                log.exception("recovery tick failed")
            await asyncio.sleep(every)

    # ------------------------------------------------------------------ the ladder

    async def _ladder(self, serial: str) -> None:
        try:
            async with self._gate:
                problem = ladder_problem(self.tracker.phones.get(serial))
                if problem is None or serial in self.busy or serial in self.given_up:
                    return  # healed or taken meanwhile
                log.warning("recovery ladder started", extra={"serial": serial, "problem": problem})
                self._take(serial, AGENT)
                try:
                    await self._climb(serial)
                finally:
                    self._new_spell(serial)
                    self._let_go(serial)
        finally:
            self._ladders.pop(serial, None)

    async def _climb(self, serial: str) -> None:
        tried: list[str] = []
        for rung in LADDER:
            if rung is RecoveryRung.reboot:
                spent = self.store.reboots(serial)
                if spent >= self.settings.max_reboots_per_day:
                    self._skip_and_give_up(serial, rung, f"reboot budget spent ({spent} in 24 h)")
                    return
            result = await self._rung(serial, rung, AGENT, last=rung is LADDER[-1], tried=tried)
            if result.outcome == "healed" or rung is LADDER[-1]:
                return

    def _skip_and_give_up(self, serial: str, rung: RecoveryRung, detail: str) -> None:
        self._send(serial, rung, AGENT)
        self._end(serial, rung, AGENT, RungResult("skipped", detail), 0.0, give_up=True)
        self._give_up(serial, detail)

    async def _rung(self, serial: str, rung: RecoveryRung, by: str, *, last: bool = False,
                    tried: list[str] | None = None) -> RungResult:
        """Report the rung started, run it (or skip it), report how it ended; on the ladder's ``last`` rung
        without healing, give up."""
        self._send(serial, rung, by)
        started = time.monotonic()
        reason = await self.rungs.skipped(serial, rung)
        if reason is not None:
            result = RungResult("skipped", reason)
        else:
            if rung is RecoveryRung.reboot:
                self.store.add_reboot(serial)  # counted before it is sent
            result = await self.rungs.run(serial, rung)
            if tried is not None:
                tried.append(rung.value)
        took = time.monotonic() - started
        if not last or result.outcome == "healed":
            self._end(serial, rung, by, result, took)
            return result
        summary = f"recovery failed after {', '.join(tried)}" if tried else "no rung could run"
        self._end(serial, rung, by, RungResult(result.outcome, "; ".join(
            d for d in (result.detail, summary) if d)[:1000]), took, give_up=True)
        self._give_up(serial, summary)
        return result

    def _give_up(self, serial: str, detail: str) -> None:
        log.warning("recovery ladder gave up", extra={"serial": serial, "detail": detail})
        self.given_up[serial] = detail
        self.store.give_up(serial, detail)

    # ------------------------------------------------------------------ an operator's rung

    def request(self, ask: DeviceRecover) -> None:
        """Run exactly the rung asked for, now (even where the ladder would not); one already running on the
        phone is not interrupted: this one is reported skipped."""
        if ask.serial in self.busy:
            self._end(ask.serial, ask.rung, ask.by, RungResult("skipped", ALREADY_RUNNING), 0.0)
            return
        self._take(ask.serial, ask.by)  # at once, so a second request finds the phone held
        self._spawn(self._operator_rung(ask), f"rung-{ask.serial}")

    async def _operator_rung(self, ask: DeviceRecover) -> None:
        log.warning("rung asked for", extra={"serial": ask.serial, "rung": str(ask.rung), "by": ask.by})
        try:
            self.forgive(ask.serial)  # an operator took a hand: the ladder may climb again if it stays bad
            await self._rung(ask.serial, ask.rung, ask.by)
        finally:
            self._new_spell(ask.serial)
            self._let_go(ask.serial)

    # ------------------------------------------------------------------ bookkeeping

    def _take(self, serial: str, by: str) -> None:
        self.busy[serial] = by
        self.hold(serial, by)

    def _let_go(self, serial: str) -> None:
        self.busy.pop(serial, None)
        self.hold(serial, None)

    def _send(self, serial: str, rung: RecoveryRung, by: str) -> None:
        self.report(DEVICE_RECOVERY, RecoveryReport(serial=serial, rung=rung, phase="started", by=by[:200]))

    def _end(self, serial: str, rung: RecoveryRung, by: str, result: RungResult, took: float, *,
             give_up: bool = False) -> None:
        log.info("rung ended", extra={"serial": serial, "rung": str(rung), "by": by, "outcome": result.outcome,
                                      "detail": result.detail, "took_sec": round(took, 3), "give_up": give_up})
        self.history.append(RungRecord(serial, rung, by, result.outcome, result.detail, took, give_up,
                                      time.time()))
        del self.history[:-HISTORY]
        self.report(DEVICE_RECOVERY, RecoveryReport(serial=serial, rung=rung, phase="ended", outcome=result.outcome,
                                                    detail=result.detail, by=by[:200], give_up=give_up))
        touched, self._ended = self._ended, asyncio.Event()
        touched.set()

    async def wait_ended(self, check: Callable[[list[RungRecord]], bool]) -> list[RungRecord]:
        """The history once ``check`` passes on it (tests and benchmarks wait on rungs so); the caller bounds it."""
        while True:
            ended = self._ended
            if check(self.history):
                return self.history
            await ended.wait()
