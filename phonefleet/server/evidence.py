"""A run's evidence as the API answers it: its step timeline and its logcat, filtered on the server."""

import asyncio
import gzip
import io
from pathlib import Path

import asyncpg

from phonefleet.protocol.artifacts import ArtifactStatus
from phonefleet.protocol.timeline import (
    LEVEL_ORDER,
    LOGCAT_TRUNCATED_MARK,
    Crash,
    LogcatAnswer,
    LogcatLine,
    LogLevel,
    StepOutcome,
    StepRecord,
    StepTimeline,
    logcat_artifact_name,
    parse_line,
)
from phonefleet.server.artifacts import ArtifactStore
from phonefleet.server.errors import Conflict, NotFound, ServiceError
from phonefleet.server.routes import LogcatQuery
from phonefleet.server.store import Conn
from phonefleet.server.store import artifacts as artifacts_store
from phonefleet.server.store import steps as steps_store
from phonefleet.server.store.records import RunEvidence, StepRow

ENDED = {"completed", "failed", "timed_out", "cancelled"}
READ_LIMIT = 64 * 1024 * 1024
"""A stored logcat is read up to this much uncompressed (the agent keeps 2 MiB; the rest is a bad file)."""


class LogcatUploading(Conflict):
    code = "uploading"


class LogcatDeleted(ServiceError):
    status = 410
    code = "deleted"


async def logcat_file(conn: Conn, artifacts: ArtifactStore, assignment_id: int) -> Path:
    """Where the run's verified logcat is, or why there is none to read: never captured (404), still on its
    way from the agent (409 ``uploading``), or deleted by retention or lost (410 ``deleted``, with the reason).
    Files stored before artifacts had rows are found on disk."""
    name = logcat_artifact_name(assignment_id)
    row = await artifacts_store.get(conn, assignment_id, name)
    if row is not None and row.status == ArtifactStatus.uploading:
        raise LogcatUploading(f"assignment {assignment_id}'s logcat is still uploading from its agent")
    if row is not None and row.status == ArtifactStatus.deleted:
        raise LogcatDeleted(f"assignment {assignment_id}'s logcat was deleted: {row.deleted_reason or 'no reason'}")
    path = artifacts.path(assignment_id, name)
    if not path.is_file():
        raise NotFound(f"assignment {assignment_id} has no logcat")
    return path


def _timeline(assignment_id: int, run: RunEvidence, rows: list[StepRow]) -> StepTimeline:
    steps = [StepRecord.model_validate(dict(r.items())) for r in rows]
    if run.status in ENDED:  # the plan's steps the run never reached
        reached = {s.step_index for s in steps}
        for index, step in enumerate(run.plan or []):
            if index not in reached and isinstance(step, dict):
                name = step.get("name")
                steps.append(StepRecord(step_index=index, type=str(step.get("type") or "unknown")[:100],
                                        name=str(name)[:200] if name else None, outcome=StepOutcome.not_run))
        steps.sort(key=lambda s: s.step_index)
    failed = next((s.step_index for s in steps
                   if s.outcome in (StepOutcome.failed, StepOutcome.timed_out)), None)
    return StepTimeline(assignment_id=assignment_id, status=run.status, steps=steps, failed_step=failed,
                        crashes=[Crash.model_validate(c) for c in run.crashes or []])


def filter_logcat(assignment_id: int, data: bytes, query: LogcatQuery, artifact: str) -> LogcatAnswer:
    """The lines of a gzip'd ``-v threadtime`` capture that match the query."""
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as unzipped:
        text = unzipped.read(READ_LIMIT).decode(errors="replace")
    floor = LEVEL_ORDER[query.level] if query.level is not None else 0
    needle = query.q.lower() if query.q else None
    total = matched = 0
    lines: list[LogcatLine] = []
    capped = False
    for raw in text.splitlines():
        line = parse_line(raw)
        if line is None:
            capped = capped or raw.startswith(LOGCAT_TRUNCATED_MARK)
            continue
        total += 1
        if LEVEL_ORDER[LogLevel(line.level)] < floor or (query.tag is not None and line.tag != query.tag):
            continue
        if needle is not None and needle not in line.message.lower() and needle not in line.tag.lower():
            continue
        matched += 1
        if len(lines) < query.limit:
            lines.append(line)
    return LogcatAnswer(assignment_id=assignment_id, lines=lines, total=total, matched=matched,
                        truncated=matched > len(lines), capture_truncated=capped, artifact=artifact)


class Evidence:
    def __init__(self, pool: asyncpg.Pool, artifacts: ArtifactStore) -> None:
        self.pool = pool
        self.artifacts = artifacts

    async def steps(self, assignment_id: int) -> StepTimeline:
        async with self.pool.acquire() as conn:
            run = await steps_store.run_of(conn, assignment_id)
            if run is None:
                raise NotFound(f"assignment {assignment_id} not found")
            rows = await steps_store.of_assignment(conn, assignment_id)
        return _timeline(assignment_id, run, rows)

    async def logcat(self, assignment_id: int, query: LogcatQuery) -> LogcatAnswer:
        async with self.pool.acquire() as conn:
            path = await logcat_file(conn, self.artifacts, assignment_id)
        data = await asyncio.to_thread(path.read_bytes)
        try:
            return await asyncio.to_thread(filter_logcat, assignment_id, data, query, path.name)
        except (OSError, EOFError, gzip.BadGzipFile):
            raise NotFound(f"assignment {assignment_id}'s logcat is unreadable") from None
