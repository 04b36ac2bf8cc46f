"""A phone's reliability record, from its runs (with each failure's blame) and its timeline."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from phonefleet.protocol.health import FailureCount, LastFailure, Reliability
from phonefleet.server.store import Conn, device_events
from phonefleet.server.store import quarantine as quarantine_store
from phonefleet.server.store.quarantine import EndedRun

WINDOW_RUNS = 50
FAILURES_24H_LIMIT = 1000
"""Failures of the last 24 h read for the record (each needs its job's outcomes elsewhere): a bound on its cost."""


def _rate(runs: list[EndedRun]) -> float | None:
    return round(sum(r.status == "completed" for r in runs) / len(runs), 4) if runs else None


async def record(conn: Conn, device_id: int, *, released_at: datetime | None) -> Reliability:
    now = datetime.now(UTC)
    day, week = now - timedelta(days=1), now - timedelta(days=7)
    last = (await quarantine_store.recent_runs(conn, [device_id], limit=WINDOW_RUNS)).get(device_id, [])
    since_release = [r for r in last if released_at is None or r.finished_at > released_at]
    totals = await quarantine_store.run_totals(conn, device_id, day, week)
    failures_week = await quarantine_store.runs_since(conn, device_id, week, failures_only=True,
                                                      limit=FAILURES_24H_LIMIT)
    by_code: dict[str, FailureCount] = defaultdict(FailureCount)
    for run in failures_week:
        if run.finished_at >= day:
            count = by_code[run.error_code or run.status]
            setattr(count, run.blame, getattr(count, run.blame) + 1)
    phone_failures_week = sum(r.blame == "phone" for r in failures_week)
    waits = [(r.started_at - r.created_at).total_seconds() for r in last if r.started_at is not None]
    newest_failure = next((r for r in last if r.failed), None) or (failures_week[0] if failures_week else None)
    disconnects = await device_events.disconnects_since(conn, [device_id], day)
    return Reliability(
        runs=totals["runs"], runs_24h=totals["runs_24h"],
        success_rate_50=_rate(last),
        success_rate_24h=round(totals["completed_24h"] / totals["runs_24h"], 4) if totals["runs_24h"] else None,
        failure_streak=len(quarantine_store.failure_streak(since_release)),
        outlier_streak=len(quarantine_store.outlier_streak(since_release)),
        failures_by_code=dict(by_code), disconnects_24h=disconnects.get(device_id, 0),
        mtbf_sec=round(totals["run_sec_7d"] / phone_failures_week, 1) if phone_failures_week else None,
        last_failure=LastFailure(
            assignment_id=newest_failure.assignment_id, job_id=newest_failure.job_id,
            error_code=newest_failure.error_code, error=newest_failure.error, finished_at=newest_failure.finished_at,
            blame=newest_failure.blame) if newest_failure else None,
        avg_queue_wait_sec=round(sum(waits) / len(waits), 3) if waits else None,
    )
