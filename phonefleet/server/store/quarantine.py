"""SQL of quarantine and recovery: taking phones out of distribution, letting them back, the rung the agent
runs, and the facts the policy reads (failure streaks, long illness, phones due a self-test).

Each write sets a fact (``quarantined_at``, ``recovering``); the caller then recomputes the phones' states
(``devices.refresh_states``), as for every other fact, so the state follows ``DEVICE_STATE_PRECEDENCE``.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from phonefleet.protocol.enums import PHONE_ERROR_CODES, DeviceEventKind, DeviceState
from phonefleet.protocol.health import Blame
from phonefleet.protocol.states import DEVICE_QUARANTINE_FROM, DEVICE_RELEASE_FROM, as_guard
from phonefleet.server.store import Conn, Row, device_events
from phonefleet.server.store.records import DeviceEventRecord


async def quarantine(conn: Conn, device_ids: Sequence[int], *, reason: str,
                     by: str) -> tuple[list[int], list[DeviceEventRecord]]:
    """Quarantine these phones (those not quarantined already); returns their ids and the events written."""
    rows = await conn.fetch(
        """UPDATE devices SET quarantined_at = now(), quarantine_reason = $2, quarantined_by = $3, selftest_at = NULL
           WHERE id = ANY($1::bigint[]) AND quarantined_at IS NULL AND state = ANY($4::text[])
           RETURNING id""",
        list(device_ids), reason[:500], by, as_guard(DEVICE_QUARANTINE_FROM),
    )
    ids = [r["id"] for r in rows]
    events = await device_events.add_many(
        conn, [device_events.NewEvent(i, DeviceEventKind.quarantined, by, reason[:500]) for i in ids])
    return ids, events


async def release(conn: Conn, device_id: int, *, by: str, reason: str) -> DeviceEventRecord | None:
    """Let a quarantined phone back (its facts then decide its state); None when it was not quarantined.

    The policy judges only what happens from now on: failures before the release no longer count, and a
    phone still unhealthy starts its illness clock again."""
    row = await conn.fetchrow(
        """UPDATE devices SET quarantined_at = NULL, quarantine_reason = NULL, quarantined_by = NULL,
               selftest_at = NULL, released_at = now(),
               unhealthy_since = CASE WHEN unhealthy_since IS NOT NULL THEN now() END
           WHERE id = $1 AND quarantined_at IS NOT NULL AND state = ANY($2::text[])
           RETURNING id""",
        device_id, as_guard(DEVICE_RELEASE_FROM),
    )
    if row is None:
        return None
    (event,) = await device_events.add_many(
        conn, [device_events.NewEvent(device_id, DeviceEventKind.released, by, reason)])
    return event


async def start_recovering(conn: Conn, agent_id: int, serial: str, rung: str) -> int | None:
    """Record the rung the agent runs on its phone now; the phone's id, or None if the agent has no such phone."""
    device_id = await conn.fetchval(
        "UPDATE devices SET recovering = $3 WHERE agent_id = $1 AND serial = $2 RETURNING id", agent_id, serial, rung)
    return int(device_id) if device_id is not None else None


async def end_recovering(conn: Conn, agent_id: int, serial: str, rung: str) -> int | None:
    """The rung ended: the phone is no longer recovering, unless another rung runs on it (a rung refused
    because one was running ends without touching it); the phone's id, or None if unknown."""
    device_id = await conn.fetchval(
        """UPDATE devices SET recovering = CASE WHEN recovering = $3 THEN NULL ELSE recovering END
           WHERE agent_id = $1 AND serial = $2 RETURNING id""",
        agent_id, serial, rung)
    return int(device_id) if device_id is not None else None


async def device_of(conn: Conn, agent_id: int, serial: str) -> int | None:
    device_id = await conn.fetchval("SELECT id FROM devices WHERE agent_id = $1 AND serial = $2", agent_id, serial)
    return int(device_id) if device_id is not None else None


async def unhealthy_since_before(conn: Conn, cutoff: datetime, limit: int) -> list[Row]:
    """Connected phones unhealthy since before ``cutoff`` and not quarantined: id, unhealthy_since, reason."""
    return await conn.fetch(
        """SELECT id, unhealthy_since, health_reason FROM devices
           WHERE unhealthy_since < $1 AND quarantined_at IS NULL AND connected
           ORDER BY unhealthy_since LIMIT $2""",
        cutoff, limit,
    )


async def due_selftest(conn: Conn, *, cooldown_sec: float, every_sec: float, limit: int) -> list[Row]:
    """Quarantined phones past their cool-down, connected through an online agent, whose last self-test (if any)
    is older than ``every_sec``: marked as asked now; returns id, agent_id, serial."""
    return await conn.fetch(
        f"""WITH due AS (
                SELECT d.id FROM devices d JOIN agents ag ON ag.id = d.agent_id
                WHERE d.quarantined_at <= now() - make_interval(secs => $1) AND d.connected
                  AND ag.status <> 'offline' AND d.recovering IS NULL
                  AND (d.selftest_at IS NULL OR d.selftest_at <= now() - make_interval(secs => $2))
                ORDER BY d.quarantined_at LIMIT $3 FOR UPDATE OF d SKIP LOCKED)
            UPDATE devices d SET selftest_at = now() FROM due WHERE d.id = due.id
              AND d.state = '{DeviceState.quarantined}'
            RETURNING d.id, d.agent_id, d.serial""",
        cooldown_sec, every_sec, limit,
    )


# ----------------------------------------------------------------------------------------------- blame


@dataclass(frozen=True)
class EndedRun:
    """A run of a phone that ended, with what its job did on the other phones it ran on."""

    assignment_id: int
    job_id: int
    status: str
    error_code: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime
    ok_elsewhere: int
    failed_elsewhere: int

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "timed_out")

    @property
    def blame(self) -> Blame:
        """Who a failure counts against. A job failing on most phones it ran on takes the blame (its plan is
        wrong). Otherwise ``device_lost``, ``adb_error`` and ``probe_failed`` speak of the phone; a timeout
        does when the job succeeds elsewhere (else the plan may just be slow). Any other failure (a step, a
        test) is the job's own business, and counts against nothing."""
        if not self.failed:
            return "none"
        if self.failed_elsewhere > self.ok_elsewhere:
            return "job"
        code = self.error_code or ("timeout" if self.status == "timed_out" else None)
        if code == "timeout":
            return "phone" if self.ok_elsewhere > self.failed_elsewhere else "none"
        return "phone" if code in PHONE_ERROR_CODES else "none"


_RUN = """
    SELECT a.id AS assignment_id, a.job_id, a.status, a.error_code, a.error, a.created_at, a.started_at,
           a.finished_at,
           CASE WHEN a.status IN ('failed', 'timed_out') THEN
               (SELECT count(*) FROM assignments o WHERE o.job_id = a.job_id AND o.device_id <> a.device_id
                AND o.status = 'completed')::int ELSE 0 END AS ok_elsewhere,
           CASE WHEN a.status IN ('failed', 'timed_out') THEN
               (SELECT count(*) FROM assignments o WHERE o.job_id = a.job_id AND o.device_id <> a.device_id
                AND o.status IN ('failed', 'timed_out'))::int ELSE 0 END AS failed_elsewhere
    FROM assignments a
"""
"""A phone's ended run and its job's outcomes elsewhere (counted only for failures: a success needs no blame)."""

ENDED = "a.finished_at IS NOT NULL AND a.status IN ('completed', 'failed', 'timed_out')"


def _run(row: Row) -> EndedRun:
    return EndedRun(**dict(row.items()))


async def recent_runs(conn: Conn, device_ids: Sequence[int], *, limit: int,
                      since_release: bool = False) -> dict[int, list[EndedRun]]:
    """Each phone's last ``limit`` ended runs, newest first (since its last release, if asked)."""
    rows = await conn.fetch(
        f"""SELECT d.id AS device_id, r.* FROM devices d CROSS JOIN LATERAL (
                {_RUN} WHERE a.device_id = d.id AND {ENDED}
                  AND (NOT $3 OR d.released_at IS NULL OR a.finished_at > d.released_at)
                ORDER BY a.finished_at DESC LIMIT $2) r
            WHERE d.id = ANY($1::bigint[])
            ORDER BY d.id, r.finished_at DESC""",
        list(device_ids), limit, since_release,
    )
    out: dict[int, list[EndedRun]] = {}
    for r in rows:
        fields = dict(r.items())
        device_id = fields.pop("device_id")
        out.setdefault(device_id, []).append(EndedRun(**fields))
    return out


def outlier_streak(runs: Sequence[EndedRun]) -> list[EndedRun]:
    """The failures in a row at the head of ``runs`` that the phone is blamed for, or whose job succeeds on
    most of the other phones it ran on (any error code); a success ends it, a job-blamed failure is skipped."""
    streak: list[EndedRun] = []
    for run in runs:
        if run.status == "completed":
            break
        if run.blame == "phone" or (run.failed and run.blame == "none" and run.ok_elsewhere > run.failed_elsewhere):
            streak.append(run)
    return streak


def failure_streak(runs: Sequence[EndedRun]) -> list[EndedRun]:
    """The phone-attributed failures in a row at the head of ``runs`` (newest first): a success ends the
    streak, a failure the phone is not blamed for neither counts nor ends it."""
    streak: list[EndedRun] = []
    for run in runs:
        if run.status == "completed":
            break
        if run.blame == "phone":
            streak.append(run)
    return streak


async def runs_since(conn: Conn, device_id: int, since: datetime, *, failures_only: bool,
                     limit: int) -> list[EndedRun]:
    rows = await conn.fetch(
        f"""{_RUN} WHERE a.device_id = $1 AND {ENDED} AND a.finished_at >= $2
              AND (NOT $3 OR a.status IN ('failed', 'timed_out'))
            ORDER BY a.finished_at DESC LIMIT $4""",
        device_id, since, failures_only, limit,
    )
    return [_run(r) for r in rows]


async def run_totals(conn: Conn, device_id: int, since_24h: datetime, since_7d: datetime) -> Row:
    """runs (ever), runs_24h, completed_24h, run_sec_7d (time spent running over 7 days)."""
    row = await conn.fetchrow(
        f"""SELECT count(*)::int AS runs,
                   count(*) FILTER (WHERE a.finished_at >= $2)::int AS runs_24h,
                   count(*) FILTER (WHERE a.finished_at >= $2 AND a.status = 'completed')::int AS completed_24h,
                   coalesce(sum(extract(epoch FROM a.finished_at - a.started_at))
                            FILTER (WHERE a.finished_at >= $3 AND a.started_at IS NOT NULL), 0)::float8 AS run_sec_7d
            FROM assignments a WHERE a.device_id = $1 AND {ENDED}""",
        device_id, since_24h, since_7d,
    )
    assert row is not None
    return row
