"""Random faults at random times, from a seed: the plan is drawn before the soak starts, so a seed
repeats the same faults at the same offsets on the same targets (the system's own timing still varies).

Each fault is injected, held for its drawn time, then healed (a killed process restarted, a stalled
link healed, a phone plugged back), and what really happened is kept as a ``FaultRecord``: the audit
uses those windows to tell a run the agent could not have known the end of from a lost one.
"""

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

KINDS = ("agent_kill", "link_cut", "link_stall", "server_kill", "postgres_restart", "phone_unplug")
WEIGHTS = {"agent_kill": 2, "link_cut": 2, "link_stall": 1, "server_kill": 1, "postgres_restart": 1,
           "phone_unplug": 4}
HOLD_SEC = {  # how long each fault lasts, drawn uniformly (a stall may outlast the server's 20 s grace)
    "agent_kill": (0.5, 8.0), "link_cut": (0.0, 0.0), "link_stall": (2.0, 35.0), "server_kill": (0.5, 5.0),
    "postgres_restart": (1.0, 5.0), "phone_unplug": (0.5, 12.0),
}


@dataclass(frozen=True)
class PlannedFault:
    at: float
    """Seconds after the soak's start."""
    kind: str
    rack: int
    phone: int
    hold: float


def plan_faults(seed: int, duration: float, racks: int, phones_per_rack: int, mean_gap: float) -> list[PlannedFault]:
    """Exponential gaps of ``mean_gap`` s; the first faults are one of each kind (in a seeded order), so a
    short soak still has every kind; then kinds by ``WEIGHTS``."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    plan: list[PlannedFault] = []
    at = 0.0
    while True:
        at += rng.expovariate(1 / mean_gap)
        if at >= duration:
            return plan
        kind = kinds[len(plan)] if len(plan) < len(kinds) else rng.choices(KINDS, [WEIGHTS[k] for k in KINDS])[0]
        low, high = HOLD_SEC[kind]
        plan.append(PlannedFault(round(at, 3), kind, rng.randrange(racks), rng.randrange(phones_per_rack),
                                 round(rng.uniform(low, high), 3)))


@dataclass
class FaultRecord:
    kind: str
    target: str
    planned_at: float
    started: float = 0.0
    """Wall clock (``time.time()``), as the phones' action logs and PostgreSQL's timestamps."""
    ended: float | None = None
    note: str = ""
    skipped: bool = False

    def covers(self, start: float, end: float, slack: float = 1.0) -> bool:
        """Did this fault's window overlap [start, end] (with ``slack`` s either side)?"""
        stop = self.ended if self.ended is not None else time.time()
        return not self.skipped and self.started - slack <= end and stop + slack >= start


class Target:
    """What a fault acts on: apply it, heal it. Healing runs even when the soak is stopped mid-fault."""

    def __init__(self, label: str, apply: Callable[[], object], heal: Callable[[], object]) -> None:
        self.label = label
        self.apply = apply
        self.heal = heal


@dataclass
class Chaos:
    """Runs a fault plan against the cluster's targets (given by ``targets(fault) -> Target``)."""

    plan: list[PlannedFault]
    targets: Callable[[PlannedFault], Target]
    records: list[FaultRecord] = field(default_factory=list)
    _busy: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, started: float, say: Callable[[str], None]) -> None:
        """Inject each planned fault at its time (``started`` is the loop time of the soak's start)."""
        loop = asyncio.get_running_loop()
        for fault in self.plan:
            await asyncio.sleep(max(0.0, started + fault.at - loop.time()))
            task = asyncio.create_task(self._one(fault, say))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def heal_all(self) -> None:
        """Stop: every fault still held is healed now (its task's ``finally``)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _one(self, fault: PlannedFault, say: Callable[[str], None]) -> None:
        target = self.targets(fault)
        record = FaultRecord(fault.kind, target.label, fault.at, started=time.time())
        self.records.append(record)
        if target.label in self._busy:
            record.skipped, record.note = True, "target already under a fault"
            return
        self._busy.add(target.label)
        try:
            note = target.apply()
            if asyncio.iscoroutine(note):
                note = await note
            record.note = str(note or "")
            say(f"  t={fault.at:5.0f} s  fault {fault.kind:<16} {target.label:<24} hold {fault.hold:5.1f} s"
                + (f"  ({record.note})" if record.note else ""))
            await asyncio.sleep(fault.hold)
        finally:
            with contextlib.suppress(Exception):
                healed = target.heal()
                if asyncio.iscoroutine(healed):
                    await asyncio.shield(healed)
            record.ended = time.time()
            self._busy.discard(target.label)

    def counts(self) -> dict[str, int]:
        done = Counter(r.kind for r in self.records if not r.skipped)
        return {kind: done.get(kind, 0) for kind in KINDS}

    def skipped(self) -> int:
        return sum(r.skipped for r in self.records)
