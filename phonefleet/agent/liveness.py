"""Noticing a half-open socket in seconds: probe a quiet link, give up on a silent one.

A link whose packets are silently dropped (a NAT that lost its state, a dead Wi-Fi) sends no FIN
and no RST; TCP and Engine.IO's own pings take 20 s or more to notice. The agent watches what it
hears instead: anything from the server (an ack, an event) proves the link; after ``probe_sec``
of quiet it sends one small probe (``agent:ping``, answered by the server without the database);
after ``stall_sec`` of silence the link is declared stalled. Since a probe goes out every
``probe_sec`` while quiet, a stall is noticed at most ``stall_sec`` after it began.

The probe is the agent's own, not Engine.IO's ping: the server's ping interval applies to every
socket, dashboards included (thousands of them), while this costs one small message per quiet
second per agent, and nothing on a busy link.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LinkTimings:
    """How fast the link gives up on a socket or a request; the agent's settings fill it."""

    probe_sec: float = 1.0
    stall_sec: float = 3.0
    connect_timeout_sec: float = 5.0
    http_timeout_sec: float = 10.0
    ack_timeout_sec: float = 30.0
    """A call whose answer never comes on a live socket (the stall watch covers a dead one)."""

    def __post_init__(self) -> None:
        if not 0 < self.probe_sec < self.stall_sec:
            raise ValueError("probe_sec must be positive and shorter than stall_sec")


class Liveness:
    """What was last heard on one socket; ``watch`` returns once it has been silent for ``stall_sec``."""

    def __init__(self, probe_sec: float, stall_sec: float) -> None:
        self.probe_sec = probe_sec
        self.stall_sec = stall_sec
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self.probes = 0

    def heard(self) -> None:
        """Something arrived from the server: the link is alive now."""
        self._last = self._loop.time()

    def quiet(self) -> float:
        return self._loop.time() - self._last

    async def watch(self, probe: Callable[[], Awaitable[object]]) -> float:
        """Probe whenever quiet (one probe in flight at a time); return the silence once it reaches
        ``stall_sec``. ``probe`` should call ``heard`` when answered; its errors are ignored."""
        probing: asyncio.Task[object] | None = None
        try:
            while (quiet := self.quiet()) < self.stall_sec:
                if quiet >= self.probe_sec and (probing is None or probing.done()):
                    probing = asyncio.create_task(self._probe(probe))
                    self.probes += 1
                until_probe = self.probe_sec - quiet
                await asyncio.sleep(until_probe if until_probe > 0 else min(self.probe_sec, self.stall_sec - quiet))
            return quiet
        finally:
            if probing is not None:
                probing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probing

    @staticmethod
    async def _probe(probe: Callable[[], Awaitable[object]]) -> object:
        with contextlib.suppress(Exception):
            return await probe()
        return None
