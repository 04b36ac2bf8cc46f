"""The soak's verdict: every job's accounting in PostgreSQL against what the virtual phones really ran.

A *run* is what a phone's action log shows: the job's URL opened (the run started) and, later, its
``/done`` URL (the run reached its last step). An *attempt* is a row of ``assignments``. Each run is
matched to the attempt of that job on that phone that existed when it started (the latest one
created before it). Then, exactly:

- **lost**: a run the phone finished whose attempt is not ``completed`` (unless a fault on that phone
  or its agent explains why the agent could not know: the phone unplugged, or the agent killed, while
  the run ended), or a completed attempt the job's ``completed_count`` does not count;
- **recorded twice**: a job counting more outcomes than its attempts hold, more completed attempts
  than its target, or a slot handed on twice;
- **run twice without a record of both attempts**: an attempt matched by more than one run, or a run
  with no attempt at all;
- **recorded but never ran**: a completed attempt whose phone never finished that run;
- **not converged**: a job not ``completed``, with open attempts or pending retries, or whose counts do
  not add up (completed + failed = target = assigned; attempts = assigned + retried + handed back).
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg

from bench.soak.faults import FaultRecord
from bench.soak.workload import DONE_SUFFIX, URL_PREFIX
from phonefleet.virtual import VirtualPhone

CATEGORIES = ("lost", "recorded_twice", "run_twice_unrecorded", "recorded_not_run", "not_converged")
OPEN = ("pending", "delivered", "running", "paused")
UNPLUG_CODES = ("device_lost", "adb_error")  # what an agent reports when the phone vanished mid-command
CRASH_CODES = ("interrupted",)  # what a restarted agent reports for a run its crash cut short
HANDED_BACK = "handed_back"  # an unstarted attempt whose phone went away: its slot went back to the job


@dataclass(frozen=True)
class PhoneRun:
    serial: str
    key: str
    started: float
    done: float | None


@dataclass(frozen=True)
class Attempt:
    id: int
    job_id: int
    serial: str
    status: str
    error_code: str | None
    attempt: int
    retried: bool
    retry_due: bool
    superseded: bool
    created: float
    finished: float | None


@dataclass(frozen=True)
class JobRow:
    id: int
    key: str
    status: str
    target: int
    assigned: int
    completed: int
    failed: int
    retry_pending: int


@dataclass(frozen=True)
class Violation:
    category: str
    job_id: int | None
    serial: str | None
    detail: str

    def __str__(self) -> str:
        where = f"job {self.job_id}" if self.job_id is not None else "no job"
        return f"[{self.category}] {where}, phone {self.serial or '-'}: {self.detail}"


@dataclass
class Verdict:
    jobs: int = 0
    attempts: int = 0
    runs: int = 0
    finished_runs: int = 0
    excused: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    dropped_log_records: int = 0

    def count(self, category: str) -> int:
        return sum(v.category == category for v in self.violations)

    @property
    def ok(self) -> bool:
        return not self.violations and self.dropped_log_records == 0


# ------------------------------------------------------------------ reading both sides


def _url_of(argv: Sequence[str]) -> str | None:
    if len(argv) >= 2 and argv[0] == "am" and argv[1] == "start" and "-d" in argv:
        i = argv.index("-d")
        return argv[i + 1] if i + 1 < len(argv) else None
    return None


def phone_runs(phones: Iterable[VirtualPhone]) -> tuple[list[PhoneRun], int]:
    """Every soak run each phone's log shows, and how many log records were dropped (must be 0)."""
    runs: list[PhoneRun] = []
    dropped = 0
    for phone in phones:
        log = phone.actions
        dropped += len(log) - len(log.records)
        started: list[tuple[str, float]] = []  # in order; a done closes the latest open run of its key
        done: dict[int, float] = {}
        for record in log.records:
            url = _url_of(record.argv)
            if url is None or not url.startswith(URL_PREFIX):
                continue
            rest = url[len(URL_PREFIX):]
            if rest.endswith(DONE_SUFFIX):
                key = rest[: -len(DONE_SUFFIX)]
                open_runs = [i for i, (k, _) in enumerate(started) if k == key and i not in done]
                if open_runs:
                    done[open_runs[-1]] = record.timestamp
            else:
                started.append((rest, record.timestamp))
        runs += [PhoneRun(phone.adb_serial, key, t, done.get(i)) for i, (key, t) in enumerate(started)]
    return runs, dropped


async def read_database(dsn: str) -> tuple[list[JobRow], list[Attempt]]:
    conn = await asyncpg.connect(dsn)
    try:
        jobs = await conn.fetch(
            """SELECT id, plan->0->>'url' AS url, status, coalesce(target_count, 0) AS target, assigned_count,
                      completed_count, failed_count, retry_pending FROM jobs ORDER BY id""")
        rows = await conn.fetch(
            """SELECT a.id, a.job_id, d.serial, a.status, a.error_code, a.attempt, a.retried,
                      a.retry_at IS NOT NULL AS retry_due, a.superseded,
                      extract(epoch FROM a.created_at)::float8 AS created,
                      extract(epoch FROM a.finished_at)::float8 AS finished
               FROM assignments a JOIN devices d ON d.id = a.device_id ORDER BY a.created_at, a.id""")
    finally:
        await conn.close()
    return ([JobRow(r["id"], str(r["url"] or "").removeprefix(URL_PREFIX), r["status"], r["target"],
                    r["assigned_count"], r["completed_count"], r["failed_count"], r["retry_pending"]) for r in jobs],
            [Attempt(**dict(r.items())) for r in rows])


# ------------------------------------------------------------------ the checks


@dataclass(frozen=True)
class Context:
    """What the checks need besides the two sides: the faults, which agent drives each phone, and the
    soak's start (times print as seconds after it)."""

    faults: list[FaultRecord]
    rack_of: dict[str, str]
    """A phone's serial -> its rack's name (``soak-pcN``)."""
    t0: float

    def at(self, t: float | None) -> str:
        return "-" if t is None else f"t={t - self.t0:.1f}s"

    def near(self, serial: str, start: float, end: float) -> str:
        """The faults that touched this phone (itself, its agent, its link, the server, PostgreSQL) then."""
        rack = self.rack_of.get(serial, "?")
        mine = {f"phone {serial}", f"agent {rack}", f"link {rack}", "server", "postgres"}
        hits = [f"{f.kind} {f.target} {self.at(f.started)}..{self.at(f.ended)}" for f in self.faults
                if f.target in mine and f.covers(start, end)]
        return "; faults then: " + (", ".join(hits) if hits else "none")


def audit(jobs: list[JobRow], attempts: list[Attempt], runs: list[PhoneRun], context: Context,
          dropped: int = 0) -> Verdict:
    verdict = Verdict(jobs=len(jobs), attempts=len(attempts), runs=len(runs),
                      finished_runs=sum(r.done is not None for r in runs), dropped_log_records=dropped)
    job_by_key = {j.key: j for j in jobs}
    by_pair: dict[tuple[int, str], list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_pair[(a.job_id, a.serial)].append(a)
    matched: dict[int, list[PhoneRun]] = defaultdict(list)
    for run in runs:
        job = job_by_key.get(run.key)
        if job is None:
            verdict.violations.append(Violation(
                "run_twice_unrecorded", None, run.serial,
                f"ran {run.key!r} at {context.at(run.started)}, a job the database does not hold"))
            continue
        earlier = [a for a in by_pair.get((job.id, run.serial), []) if a.created <= run.started + 0.05]
        if not earlier:
            verdict.violations.append(Violation(
                "run_twice_unrecorded", job.id, run.serial,
                f"ran at {context.at(run.started)} with no attempt recorded for this phone"
                + context.near(run.serial, run.started, run.done or run.started)))
            continue
        matched[earlier[-1].id].append(run)
    for a in attempts:
        _check_attempt(a, matched.get(a.id, []), context, verdict)
    by_job: dict[int, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_job[a.job_id].append(a)
    for job in jobs:
        _check_job(job, by_job.get(job.id, []), context, verdict)
    return verdict


def _describe(a: Attempt, runs: list[PhoneRun], context: Context) -> str:
    seen = ", ".join(f"started {context.at(r.started)}" + (f" finished {context.at(r.done)}" if r.done
                                                             else " unfinished") for r in runs) or "none"
    first = min([a.created, *(r.started for r in runs)])
    last = max([a.finished or a.created, *(r.done or r.started for r in runs)])
    return (f"attempt {a.attempt} (assignment {a.id}, created {context.at(a.created)}, ended "
            f"{context.at(a.finished)}) is {a.status}" + (f"/{a.error_code}" if a.error_code else "")
            + f"; runs on the phone: {seen}" + context.near(a.serial, first, last))


def _check_attempt(a: Attempt, runs: list[PhoneRun], context: Context, verdict: Verdict) -> None:
    finished = [r for r in runs if r.done is not None]
    if len(runs) > 1:
        verdict.violations.append(Violation("run_twice_unrecorded", a.job_id, a.serial,
                                            f"{len(runs)} runs for one recorded attempt: "
                                            + _describe(a, runs, context)))
    if a.status == "completed" and not finished:
        verdict.violations.append(Violation("recorded_not_run", a.job_id, a.serial, _describe(a, runs, context)))
    if a.status != "completed" and finished:
        excuse = _excuse(a, finished[-1], context)
        if excuse:
            verdict.excused[excuse] += 1
        else:
            verdict.violations.append(Violation("lost", a.job_id, a.serial,
                                                "the phone finished the run but " + _describe(a, runs, context)))


def _excuse(a: Attempt, run: PhoneRun, context: Context) -> str | None:
    """A fault that hid the run's end from its agent, within the run's window."""
    end = a.finished if a.finished is not None else run.done or run.started
    faults = context.faults
    if a.error_code in UNPLUG_CODES and any(
            f.kind == "phone_unplug" and f.target == f"phone {a.serial}" and f.covers(run.started, end)
            for f in faults):
        return "finished as its phone was unplugged (the agent saw the phone vanish)"
    if a.error_code in CRASH_CODES and any(
            f.kind == "agent_kill" and f.target == f"agent {context.rack_of.get(a.serial)}"
            and f.covers(run.started, end) for f in faults):
        return "finished as its agent was killed (the result died with the agent)"
    return None


def _check_job(job: JobRow, rows: list[Attempt], context: Context, verdict: Verdict) -> None:
    """The job's counters against its attempts. Every attempt is a slot's first (``assigned``), a retry's
    successor (one per ``retried`` attempt), or replaced by one (``handed_back``: cancelled unstarted, its
    slot reopened). A completed attempt whose slot was handed on (``retried``) is history: the slot's
    outcome is its successor's, so the job does not count it."""

    def flag(category: str, detail: str) -> None:
        listed = "; ".join(f"#{a.id} {a.serial} attempt {a.attempt} {a.status}"
                           + (f"/{a.error_code}" if a.error_code else "") + (" retried" if a.retried else "")
                           + (" retry due" if a.retry_due else "") + (" superseded" if a.superseded else "")
                           + f" created {context.at(a.created)} ended {context.at(a.finished)}" for a in rows)
        verdict.violations.append(Violation(category, job.id, None, f"{detail} [{listed}]"))

    counted = sum(a.status == "completed" and not a.retried for a in rows)
    dead = sum(a.status in ("failed", "timed_out") and not a.retried and not a.retry_due for a in rows)
    retried = sum(a.retried for a in rows)
    handed_back = sum(a.status == "cancelled" and a.error_code == HANDED_BACK for a in rows)
    open_rows = [a for a in rows if a.status in OPEN]
    counts = (f"target {job.target}, assigned {job.assigned}, completed {job.completed}, failed {job.failed}, "
              f"retry_pending {job.retry_pending}; attempts {len(rows)}: {counted} completed, {dead} failed for "
              f"good, {retried} handed on to a retry, {handed_back} handed back unstarted, {len(open_rows)} open")
    if job.status != "completed":
        flag("not_converged", f"status {job.status}; {counts}")
    if open_rows:
        flag("not_converged", "open attempts " + ", ".join(f"{a.id} {a.status} on {a.serial}" for a in open_rows))
    if job.retry_pending:
        flag("not_converged", f"retries still pending; {counts}")
    if job.completed + job.failed != job.target or job.assigned != job.target:
        flag("not_converged", f"counts do not add up; {counts}")
    if job.completed > counted or job.failed > dead:
        flag("recorded_twice", f"counts more outcomes than its attempts hold; {counts}")
    if counted > job.target:
        flag("recorded_twice", f"more completed slots than its target; {counts}")
    if len(rows) > job.assigned + retried + handed_back:
        flag("recorded_twice", f"a slot was handed on twice; {counts}")
    elif len(rows) < job.assigned + retried + handed_back:
        flag("not_converged", f"fewer attempts than slots handed out; {counts}")
    if job.completed < counted:
        flag("lost", f"completed attempts the job does not count; {counts}")
    elif job.failed < dead:
        flag("not_converged", f"failed attempts the job does not count; {counts}")
