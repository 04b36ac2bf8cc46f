"""The chaos soak: its audit classifies each way accounting can go wrong (unit tests on hand-made
records), and a 2-minute soak against the real processes loses nothing, records nothing twice, runs
nothing twice unrecorded, and every job converges."""

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bench.soak.audit import CATEGORIES, Attempt, Context, JobRow, PhoneRun, Verdict, audit
from bench.soak.faults import KINDS, FaultRecord, plan_faults

T0 = 1_000.0
A, B = "127.0.0.1:40001", "127.0.0.1:40002"
RACKS = {A: "soak-pc0", B: "soak-pc0"}


def job(target: int = 1, completed: int = 1, failed: int = 0, status: str = "completed", **kw: int) -> JobRow:
    values = {"assigned": target, "retry_pending": 0, **kw}
    return JobRow(1, "k00001", status, target, values["assigned"], completed, failed, values["retry_pending"])


def attempt(aid: int, serial: str, status: str = "completed", code: str | None = None, *, n: int = 1,
            retried: bool = False, created: float = T0 + 1, finished: float | None = T0 + 9) -> Attempt:
    return Attempt(aid, 1, serial, status, code, n, retried, False, False, created, finished)


def run(serial: str, started: float = T0 + 2, done: float | None = T0 + 5) -> PhoneRun:
    return PhoneRun(serial, "k00001", started, done)


def check(jobs: list[JobRow], attempts: list[Attempt], runs: list[PhoneRun],
          faults: list[FaultRecord] | None = None) -> Verdict:
    return audit(jobs, attempts, runs, Context(faults or [], RACKS, T0))


def categories(verdict: Verdict) -> dict[str, int]:
    return {c: verdict.count(c) for c in CATEGORIES if verdict.count(c)}


def test_audit_passes_a_job_whose_runs_and_records_agree() -> None:
    verdict = check([job(target=2, completed=2)], [attempt(1, A), attempt(2, B)], [run(A), run(B)])
    assert verdict.ok and verdict.runs == verdict.finished_runs == 2


def test_audit_passes_a_slot_retried_on_another_phone() -> None:
    first = attempt(1, A, "failed", "lost", retried=True, finished=T0 + 4)
    second = attempt(2, B, n=2, created=T0 + 6, finished=T0 + 12)
    verdict = check([job()], [first, second], [run(A, done=None), run(B, T0 + 7, T0 + 10)])
    assert verdict.ok, verdict.violations


def test_audit_passes_an_unstarted_attempt_handed_back_to_its_job() -> None:
    back = attempt(1, A, "cancelled", "handed_back", finished=T0 + 1.5)
    verdict = check([job()], [back, attempt(2, B, created=T0 + 2)], [run(B, T0 + 3, T0 + 6)])
    assert verdict.ok, verdict.violations


def test_audit_finds_a_finished_run_recorded_as_lost() -> None:
    verdict = check([job(completed=0, failed=1)], [attempt(1, A, "failed", "lost")], [run(A)])
    assert categories(verdict) == {"lost": 1}
    assert "failed/lost" in str(verdict.violations[0]) and "t=5.0s" in str(verdict.violations[0])


def test_audit_excuses_a_finished_run_whose_phone_was_unplugged_as_it_ended() -> None:
    unplug = FaultRecord("phone_unplug", f"phone {A}", 0, started=T0 + 5.5, ended=T0 + 8)
    recorded = [attempt(1, A, "failed", "device_lost")]
    assert check([job(completed=0, failed=1)], recorded, [run(A)], [unplug]).ok
    assert categories(check([job(completed=0, failed=1)], recorded, [run(A)])) == {"lost": 1}, "no unplug, no excuse"


def test_audit_finds_a_run_repeated_under_one_attempt() -> None:
    verdict = check([job()], [attempt(1, A)], [run(A, T0 + 2, None), run(A, T0 + 4, T0 + 6)])
    assert categories(verdict) == {"run_twice_unrecorded": 1}


def test_audit_finds_a_run_with_no_attempt_and_a_completion_with_no_run() -> None:
    verdict = check([job(target=2, completed=2)], [attempt(1, A), attempt(2, B, created=T0 + 3)],
                    [run(B, started=T0 + 2)])
    assert categories(verdict) == {"run_twice_unrecorded": 1, "recorded_not_run": 2}


def test_audit_finds_counters_that_disagree_with_the_attempts() -> None:
    twice = check([job(completed=2, target=2, assigned=2)], [attempt(1, A), attempt(2, B, "failed", "lost")],
                  [run(A), run(B, done=None)])
    assert categories(twice)["recorded_twice"] == 1
    open_job = check([job(completed=0, status="active")], [attempt(1, A, "running", finished=None)],
                     [run(A, done=None)])
    assert categories(open_job) == {"not_converged": 3}


def test_fault_plan_is_seeded_and_has_every_kind_first() -> None:
    plan = plan_faults(7, 120, racks=4, phones_per_rack=10, mean_gap=6)
    assert plan == plan_faults(7, 120, racks=4, phones_per_rack=10, mean_gap=6)
    assert plan != plan_faults(8, 120, racks=4, phones_per_rack=10, mean_gap=6)
    assert sorted(f.kind for f in plan[: len(KINDS)]) == sorted(KINDS)


@pytest.mark.timeout(1500)
async def test_two_minute_soak_loses_nothing_and_converges(tmp_path: Path) -> None:
    """4 agents x 10 virtual phones, every kind of fault, then the audit (see bench/soak)."""
    out = tmp_path / "soak.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.soak", "--minutes", "2", "--agents", "4", "--phones", "10", "--seed", "1",
        "--json", str(out), "--work-dir", str(tmp_path / "soak"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), 1400)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    text = output.decode(errors="replace")
    assert out.exists(), text[-5000:]
    figures = json.loads(out.read_text())
    assert all(figures["faults"][kind] >= 1 for kind in KINDS), figures["faults"]
    assert figures["phone_runs"] >= 50 and figures["jobs"] >= 10, "work flowed through the faults"
    assert figures["violations"] == dict.fromkeys(CATEGORIES, 0), text[-8000:]
    assert figures["jobs_not_converged"] == 0 and figures["dropped_log_records"] == 0
    assert proc.returncode == 0, text[-3000:]
