"""Where the time goes: wall-clock spans of the server's steps, recorded inside the server process.

With ``--breakdown`` a benchmark's server child wraps a few coroutine functions (by attribute, from the
outside: no server file changes) with timers that record ``(name, start, end)`` in ``time.perf_counter``
time. That clock is CLOCK_MONOTONIC, shared by every process on the machine, so the driver can place each
span on the same time line as its POST and the agents' arrivals. The driver fetches them from an extra
route, ``GET /bench/spans``, and prints per step the median start, end and busy time relative to the POST.
"""

import functools
import gc
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

SPANS: list[tuple[str, float, float]] = []


def _wrap(owner: Any, attr: str, name: str) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(owner, attr)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            SPANS.append((name, start, time.perf_counter()))

    setattr(owner, attr, timed)


def _time_gc() -> None:
    """Each garbage collection as a span (``gc gen2`` ...): a full collection stops the loop for all of it."""
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            SPANS.append((f"gc gen{info['generation']}", started[0], time.perf_counter()))

    gc.callbacks.append(callback)


def install(app: web.Application) -> None:
    """Wrap the steps of job creation, fill, push, pause and completion; add ``GET /bench/spans``."""
    import socketio

    from phonefleet.server import agent_events, completion, distributor, job_control, queries, realtime
    from phonefleet.server.api import Api
    from phonefleet.server.bus import Bus
    from phonefleet.server.store import assignments, devices, jobs, scheduler

    for owner, attr, name in [
        (Api, "_authorize", "api: authorize token"),
        (queries.Queries, "job", "api: render job for response"),
        (job_control.JobControl, "create", "JobControl.create"),
        (job_control.JobControl, "pause", "JobControl.pause"),
        (job_control.JobControl, "get", "JobControl.get"),
        (job_control.JobControl, "_after", "JobControl._after"),
        (jobs, "count_eligible_connected", "sql: count eligible"),
        (distributor.Distributor, "fill", "Distributor.fill"),
        (scheduler, "fill_context", "sql: fill context (idle, switch, caps)"),
        (jobs, "fillable", "sql: fillable jobs"),
        (assignments, "claim", "sql: claim (select+update+insert)"),
        (assignments, "claim_simple", "sql: claim, one statement"),
        (assignments, "pause_job", "sql: pause assignments"),
        (devices, "refresh_states", "sql: refresh device states"),
        (distributor.Distributor, "_push", "Distributor._push"),
        (realtime.Realtime, "send_orders", "Realtime.send_orders"),
        (realtime.Realtime, "send_claimed", "Realtime.send_claimed"),
        (agent_events.AgentEvents, "_beat_batch", "heartbeat batch (touch + leases)"),
        (realtime.Realtime, "to_agent", "Realtime.to_agent"),
        (realtime.Realtime, "job_status_changed", "Realtime.job_status_changed"),
        (socketio.AsyncServer, "emit", "socketio emit"),
        (Bus, "publish", "bus publish (pg_notify)"),
        (distributor.Distributor, "on_ack", "on_ack (mark delivered)"),
        (assignments, "mark_delivered", "sql: mark delivered"),
        (agent_events.AgentEvents, "handle", "AgentEvents.handle (agent event)"),
        (completion.Completion, "end", "Completion.end"),
        (completion, "in_transaction", "completion transaction"),
        (assignments, "finish", "sql: finish assignments (+job counters)"),
        (jobs, "complete_finished", "sql: complete finished jobs"),
    ]:
        _wrap(owner, attr, name)
    _time_gc()

    async def spans(_request: web.Request) -> web.Response:
        out = list(SPANS)
        SPANS.clear()
        return web.json_response(out)

    async def heap(_request: web.Request) -> web.Response:
        """What the garbage collector tracks, by type (most first): what a full collection walks (how RESULTS counted
        the heap at 500 agents)."""
        gc.collect()
        kinds = Counter(type(o).__qualname__ for o in gc.get_objects())
        return web.json_response({"tracked": sum(kinds.values()), "frozen": gc.get_freeze_count(),
                                  "top": kinds.most_common(25)})

    app.router.add_get("/bench/spans", spans)
    app.router.add_get("/bench/heap", heap)


class Breakdown:
    """Collects each run's spans relative to the run's start; prints medians over runs."""

    def __init__(self) -> None:
        self.first: dict[str, list[float]] = defaultdict(list)
        self.last: dict[str, list[float]] = defaultdict(list)
        self.busy: dict[str, list[float]] = defaultdict(list)
        self.count: dict[str, list[int]] = defaultdict(list)
        self.runs = 0
        self.slowest: tuple[float, dict[str, tuple[int, float, float, float]]] = (-1.0, {})

    def add(self, spans: list[list[Any]], t0: float, t_end: float) -> None:
        """Spans that started within [t0, t_end] of one run."""
        self.runs += 1
        per: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for name, start, end in spans:
            if t0 <= start <= t_end:
                per[name].append((start - t0, end - t0))
        table: dict[str, tuple[int, float, float, float]] = {}
        for name, items in per.items():
            table[name] = (len(items), min(s for s, _ in items), max(e for _, e in items),
                           sum(e - s for s, e in items))
            self.count[name].append(table[name][0])
            self.first[name].append(table[name][1])
            self.last[name].append(table[name][2])
            self.busy[name].append(table[name][3])
        if t_end - t0 > self.slowest[0]:
            self.slowest = (t_end - t0, table)

    def print(self, title: str) -> None:
        print(f"breakdown ({title}; medians over {self.runs} runs; ms after t0; busy = summed span time):")
        print(f"  {'step':<40} {'calls':>5} {'starts':>8} {'ends':>8} {'busy':>8}")
        for name in sorted(self.first, key=lambda n: statistics.median(self.first[n])):
            print(f"  {name:<40} {statistics.median(self.count[name]):>5.0f} "
                  f"{statistics.median(self.first[name]) * 1e3:>8.1f} {statistics.median(self.last[name]) * 1e3:>8.1f} "
                  f"{statistics.median(self.busy[name]) * 1e3:>8.1f}")
        total, table = self.slowest
        print(f"slowest run ({total * 1e3:.1f} ms):")
        for name, (n, first, last, busy) in sorted(table.items(), key=lambda kv: kv[1][1]):
            print(f"  {name:<40} {n:>5} {first * 1e3:>8.1f} {last * 1e3:>8.1f} {busy * 1e3:>8.1f}")
