"""One size's figures, printed: the set-up, the agent's throughput and fan-out, the floor, and their ratios."""

import sys
import time
from dataclasses import dataclass

from bench.adb.agent_run import AgentRun
from bench.adb.floor import Floor
from bench.adb.workload import AGENT_POOL, Size
from bench.harness import Summary


@dataclass
class SizeRun:
    """Where one size ran, and what the agent and the floor measured."""

    size: Size
    adb_port: int
    adb_pid: int | None
    phones_apart: bool
    probe_sec: float
    fleet_sec: float  # virtual phones started and adb-connected
    agent: AgentRun
    floor: Floor
    started: float  # time.perf_counter() when the size began

    @property
    def rate(self) -> float:
        return sum(self.agent.rates) / len(self.agent.rates)

    @property
    def fanout(self) -> Summary:
        return Summary.of(self.agent.fanout)


def rate_line(label: str, value: float, width: int = 58) -> str:
    return f"{label:<{width}} {value:8,.0f} /s"


def _joined(values: list[float], fmt: str = ".2f") -> str:
    return ", ".join(f"{x:{fmt}}" for x in values)


def print_setup(run: SizeRun) -> None:
    size, got = run.size, run.agent
    where = "a child process of their own" if run.phones_apart else "this process, on the agent's loop"
    print(f"\n-- {size.phones} virtual phones via the adb server on 127.0.0.1:{run.adb_port} (pid {run.adb_pid}); "
          f"phones in {where}")
    print(f"agent probe_sec {run.probe_sec:g}; virtual phones started and adb-connected in {run.fleet_sec:.2f} s; "
          f"agent.start() {got.startup:.2f} s (adb list + a probe of every phone); all {size.phones} idle in "
          f"the DB {got.ready:.2f} s after the start")


def print_agent(run: SizeRun) -> None:
    size, got = run.size, run.agent
    print(f"throughput: {size.jobs} job(s) of {size.taps} x tap to all {size.phones} phones "
          f"({size.phones * size.taps:,} adb shell commands each; +1 warm-up job of 2 taps)")
    steady = sum(got.steady) / len(got.steady)
    print(rate_line("adb commands/s, agent (POST -> job completed)", run.rate)
          + f"   runs: {', '.join(f'{r:,.0f}' for r in got.rates)}; per job "
          + ", ".join(f"{s:.1f} s" for s in got.job_sec))
    print(rate_line("  same, first tap -> last tap (phones' logs)", steady))
    print("  timeline of the job(s), s after the POST: first tap " + _joined(got.first_tap)
          + "; every phone has tapped " + _joined(got.all_started)
          + "; last tap " + _joined(got.last_tap)
          + "; completed in the DB " + _joined(got.job_sec)
          + "; agent outbox backlog max " + ", ".join(str(x) for x in got.outbox_max) + " events")
    print("CPU during the throughput jobs (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in got.cores.items()))
    print(f"fan-out: {size.fanouts} runs of one open_url (duration 0) to all {size.phones} phones, each after "
          "the previous job completed")
    print(f"POST -> every phone logged its VIEW intent   {run.fanout.ms()}")
    if got.assign:
        print(f"POST -> job:assign handled by the agent      {Summary.of(got.assign).ms()}")
    print(f"POST -> 201                                  {Summary.of(got.respond).ms()}")


def print_floor(run: SizeRun) -> None:
    floor = run.floor
    print("floor (same phones, same adb server, bare loops from this process; one command in flight per phone; "
          f"{floor.bare_per_phone} taps per phone on the bare client, {run.size.floor_per_phone} on adbutils):")
    for label, value in floor.rates.items():
        print(rate_line(f"  {label}", value))
    for label, summary in floor.views.items():
        print(f"  VIEW to every phone at once, {label:<22} {summary.ms()}")
    print("per-call latency, one thread, one phone, nothing else running:")
    for label, summary in floor.latency.items():
        print(f"  {label:<52} p50 {summary.p50 * 1e3:6.2f} ms  (min {summary.min * 1e3:.2f}, n={summary.n})")


def print_ratios(run: SizeRun) -> None:
    rate, fan = run.rate, run.fanout
    label, best = run.floor.best_rate
    old = run.floor.rates[f"adbutils shell2, {AGENT_POOL} threads (the agent before issue 14)"]
    print(f"ratio to floor, throughput: agent {rate:,.0f} /s = {rate / best:.2f} of the floor ({label}, "
          f"{best:,.0f} /s); {rate / old:.2f}x adbutils at {AGENT_POOL} threads")
    view_label, view = run.floor.best_view
    print(f"ratio to floor, fan-out: agent p50 {fan.p50 * 1e3:,.0f} ms = {fan.p50 / view.p50:.2f}x the floor's "
          f"({view_label}, p50 {view.p50 * 1e3:,.0f} ms); max {fan.max / view.max:.2f}x its max")


def print_size(run: SizeRun) -> None:
    print_setup(run)
    print_agent(run)
    print_floor(run)
    print_ratios(run)
    if run.agent.profile:
        print("where the agent process' time goes during the throughput jobs (py-spy --idle, wall time):")
        for line in run.agent.profile:
            print(f"  {line}")
    print(f"({run.size.phones} phones took {time.perf_counter() - run.started:.0f} s)")
    sys.stdout.flush()
