"""Remote control of a phone's screen: one controller at a time.

Taking control pauses the phone out of distribution (``paused_by = 'control'``, reason "in use by NAME";
unstarted work goes back to its jobs); releasing it, closing the page (its socket goes) or no input for
``screen_control_idle_sec`` gives it back. Each session is a pair of events in the phone's timeline
(``control_started``, ``control_ended``). REST input takes a session implicitly (``rest:NAME``) when nobody
holds one. Sessions live in this node's memory: a server that stops gives back the control pauses it held
when it starts again. Phones, agents and viewers are reached through the screen relay (``ScreenLink``).
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from phonefleet.protocol import events as ev
from phonefleet.protocol import screen as sc
from phonefleet.protocol.enums import DeviceEventKind
from phonefleet.server import audit
from phonefleet.server.auth import Principal
from phonefleet.server.distributor import Distributor
from phonefleet.server.errors import Conflict, Forbidden
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import Conn, device_events
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store.records import DeviceRecord
from phonefleet.server.transactions import in_transaction

log = logging.getLogger(__name__)

INPUT_SEC = 20.0
"""How long an input may take to reach the phone and run (its agent acknowledges it when it ran)."""


def may_control(principal: Principal) -> bool:
    """Who may control a phone: operators and admins (people or tokens); viewers only watch."""
    return principal.allows("operator")


def require_control(principal: Principal) -> None:
    """A 403 unless ``principal`` may control phones (checked before anything else, the phone's existence too)."""
    if not may_control(principal):
        raise Forbidden("controlling a phone needs the operator role (viewers watch)")


def who(principal: Principal) -> str:
    return principal.name


@dataclass(eq=False)
class Control:
    owner: str
    """The dashboard socket id, or ``rest:NAME`` for REST input."""
    who: str
    since: datetime
    last_input: float = field(default_factory=time.monotonic)


class ScreenLink(Protocol):
    """What control needs of the screen relay: the phone, whether its agent is reachable here, a call to that
    agent, and telling the phone's viewers the session changed."""

    async def device(self, device_id: int) -> DeviceRecord: ...

    def reachable(self, device: DeviceRecord) -> None: ...

    async def call_agent(self, device: DeviceRecord, event: str, data: dict[str, Any], *, timeout: float) -> None: ...

    async def announce(self, device_id: int) -> None: ...


class ScreenControl:
    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, distributor: Distributor, link: ScreenLink, *,
                 idle_sec: float) -> None:
        self.pool = pool
        self.realtime = realtime
        self.distributor = distributor
        self.link = link
        self.idle_sec = idle_sec
        self.controls: dict[int, Control] = {}
        self._watchdog: asyncio.Task[None] | None = None

    def held(self, device_id: int) -> Control | None:
        return self.controls.get(device_id)

    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            freed = await devices_store.end_control_pauses(conn)
        if freed:
            log.info("control pauses of a stopped server given back", extra={"devices": freed})
            self.realtime.devices_changed(freed)
            self.distributor.request_fill()
        self._watchdog = asyncio.create_task(self._idle_loop(), name="screen-control-idle")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        for device_id in list(self.controls):
            with contextlib.suppress(Exception):
                await self.release(device_id, "the server stopped")

    async def owner_gone(self, owner: str, reason: str) -> None:
        """The owner's socket closed: what it controlled is given back."""
        for device_id in [d for d, c in self.controls.items() if c.owner == owner]:
            try:
                await self.release(device_id, reason)
            except Exception:  # kept, and ended by the idle watch once the database answers
                log.warning("control release failed", exc_info=True)

    async def take(self, device_id: int, principal: Principal, *, owner: str) -> None:
        require_control(principal)
        held = self.controls.get(device_id)
        if held is not None:
            if held.owner == owner:
                held.last_input = time.monotonic()
                return
            raise Conflict(f"phone {device_id} is controlled by {held.who} (since {held.since:%H:%M:%S} UTC); "
                           "watch it, or wait until it is released")
        device = await self.link.device(device_id)
        self.link.reachable(device)
        name = who(principal)
        control = Control(owner=owner, who=name, since=datetime.now(UTC))
        self.controls[device_id] = control  # claimed before the transaction: a second taker is refused at once

        async def work(conn: Conn) -> tuple[bool, list[int]]:
            paused, changed = await devices_store.set_control_pause(conn, device_id, f"in use by {name}")
            handed = await assignments_store.hand_back(conn, device_ids=[device_id], reason=f"in use by {name}")
            if handed:
                changed += await devices_store.refresh_states(conn, [device_id])
            await device_events.add_many(conn, [device_events.NewEvent(
                device_id, DeviceEventKind.control_started, name, "remote control of the screen",
                {"paused": paused})])
            await audit.record(conn, "device.control.take", "device", device_id, before={"controlled_by": None},
                               after={"controlled_by": name, "handed_back": len(handed)})
            self.realtime.jobs_changed(h.job_id for h in handed)
            return paused, [c.id for c in changed]

        try:
            paused, _changed = await in_transaction(self.pool, work)
        except BaseException:
            self.controls.pop(device_id, None)
            raise
        if paused:
            await self.realtime.to_agent(device.agent_id, ev.DEVICE_PAUSE,
                                         ev.DeviceControl(device_id=device_id, serial=device.serial).model_dump())
        self.realtime.devices_changed([device_id])
        log.info("screen control taken", extra={"device_id": device_id, "by": name})
        await self.link.announce(device_id)

    async def release(self, device_id: int, reason: str, *, owner: str | None = None) -> bool:
        """End the control session (only the owner's, when ``owner`` is given); False if there was none."""
        control = self.controls.get(device_id)
        if control is None or (owner is not None and control.owner != owner):
            return False
        del self.controls[device_id]

        async def work(conn: Conn) -> tuple[bool, DeviceRecord | None]:
            resumed, _ = await devices_store.set_control_pause(conn, device_id, None)
            held_sec = round((datetime.now(UTC) - control.since).total_seconds(), 1)
            await device_events.add_many(conn, [device_events.NewEvent(
                device_id, DeviceEventKind.control_ended, control.who, reason, {"held_sec": held_sec})])
            await audit.record(conn, "device.control.release", "device", device_id,
                               before={"controlled_by": control.who},
                               after={"controlled_by": None, "reason": reason, "held_sec": held_sec})
            return resumed, await devices_store.get(conn, device_id)

        try:
            resumed, device = await in_transaction(self.pool, work)
        except BaseException:  # an outage: the session stays, and the idle watch ends it once it can
            self.controls.setdefault(device_id, control)
            control.last_input = min(control.last_input, time.monotonic() - self.idle_sec)
            raise
        if resumed and device is not None:
            await self.realtime.to_agent(device.agent_id, ev.DEVICE_RESUME,
                                         ev.DeviceControl(device_id=device_id, serial=device.serial).model_dump())
        self.realtime.devices_changed([device_id])
        self.distributor.request_fill()
        log.info("screen control ended", extra={"device_id": device_id, "by": control.who, "reason": reason})
        await self.link.announce(device_id)
        return True

    async def input(self, device_id: int, command: sc.InputCommand, principal: Principal, *, owner: str,
                    implicit: bool) -> sc.InputAccepted:
        """Run one input on the phone. The sender must hold control; REST (``implicit``) takes it when free."""
        require_control(principal)
        control = self.controls.get(device_id)
        if control is None and implicit:
            await self.take(device_id, principal, owner=owner)
            control = self.controls.get(device_id)
        if control is None:
            raise Conflict("take control of the phone first (screen:control with take: true)")
        if control.owner != owner:
            raise Conflict(f"phone {device_id} is controlled by {control.who}")
        control.last_input = time.monotonic()
        device = await self.link.device(device_id)
        self.link.reachable(device)
        message = sc.AgentInput(serial=device.serial, input=command)
        await self.link.call_agent(device, sc.SCREEN_INPUT, message.model_dump(mode="json"), timeout=INPUT_SEC)
        control.last_input = time.monotonic()
        return sc.InputAccepted(device_id=device_id, input=command, controller=control.who)


    async def _idle_loop(self) -> None:
        step = max(0.05, min(1.0, self.idle_sec / 4))
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            for device_id, control in list(self.controls.items()):
                if now - control.last_input >= self.idle_sec:
                    try:
                        await self.release(device_id, f"no input for {self.idle_sec:g} s")
                    except Exception:  # an outage: tried again on the next round
                        log.warning("idle control release failed", exc_info=True)

