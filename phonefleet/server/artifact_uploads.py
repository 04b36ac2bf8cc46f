"""A run's artifacts on the server: verified uploads (exactly once), lost files, and the listings.

An upload is kept only when its size and sha256 match what the agent says they are (its ``X-Artifact-*``
headers) and what the run's result said (the ``uploading`` row, when the result came first): a mismatch is a
422 naming the field, and nothing is kept. A matching upload is renamed into place, then its row says
``stored``; a repeat of a stored artifact changes nothing (200), so an agent that never heard the answer may
send it again. An upload that comes before its run's result is recorded from its headers.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiohttp import StreamReader
from multidict import CIMultiDictProxy

from phonefleet.protocol import artifacts as pa
from phonefleet.protocol.artifacts import Artifact, ArtifactKind, ArtifactLost, ArtifactPage, ArtifactStatus
from phonefleet.server.artifacts import MAX_BYTES, ArtifactStore, TooLarge
from phonefleet.server.errors import Invalid, NotFound
from phonefleet.server.store import artifacts as artifacts_store
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store.records import ArtifactRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """What an upload's headers say its bytes are (all optional: an older agent sends none)."""

    sha256: str | None = None
    size: int | None = None
    kind: ArtifactKind | None = None
    step_index: int | None = None
    taken_at: datetime | None = None

    @classmethod
    def from_headers(cls, headers: CIMultiDictProxy[str]) -> "Claim":
        sha = headers.get(pa.HEADER_SHA256)
        if sha is not None:
            sha = sha.strip().lower()
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise Invalid.field(pa.HEADER_SHA256, "64 hex digits")
        size = _int_header(headers, pa.HEADER_BYTES, 0, MAX_BYTES)
        kind_text = headers.get(pa.HEADER_KIND)
        if kind_text is not None and kind_text not in ArtifactKind.__members__:
            raise Invalid.field(pa.HEADER_KIND, f"one of {', '.join(ArtifactKind)}")
        taken_text = headers.get(pa.HEADER_TAKEN_AT)
        taken_at = None
        if taken_text is not None:
            try:
                taken_at = datetime.fromisoformat(taken_text)
            except ValueError:
                raise Invalid.field(pa.HEADER_TAKEN_AT, "an ISO 8601 time") from None
        return cls(sha, size, ArtifactKind(kind_text) if kind_text else None,
                   _int_header(headers, pa.HEADER_STEP, 0, 10_000), taken_at)


def _int_header(headers: CIMultiDictProxy[str], name: str, low: int, high: int) -> int | None:
    text = headers.get(name)
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise Invalid.field(name, f"an integer from {low} to {high}")
    return int(text)


def artifact_model(row: ArtifactRecord) -> Artifact:
    return Artifact.model_validate(dict(row.items()))


class ArtifactUploads:
    def __init__(self, pool: asyncpg.Pool, store: ArtifactStore) -> None:
        self.pool = pool
        self.store = store

    async def _row(self, agent_id: int, assignment_id: int, name: str) -> ArtifactRecord | None:
        """The artifact's row (None: not expected yet); NotFound unless the run is this agent's."""
        async with self.pool.acquire() as conn:
            if not await assignments_store.owned_by(conn, agent_id, [assignment_id]):
                raise NotFound(f"assignment {assignment_id} not found")
            return await artifacts_store.get(conn, assignment_id, name)

    async def upload(self, agent_id: int, assignment_id: int, name: str, claim: Claim, body: StreamReader
                     ) -> tuple[Artifact, bool]:
        """Keep the bytes if they are what they should be; returns the artifact and whether it is new."""
        self.store.path(assignment_id, name)  # the name is checked before anything else
        row = await self._row(agent_id, assignment_id, name)
        expected_size = claim.size if claim.size is not None else (row.bytes if row is not None else None)
        if expected_size is not None and expected_size > MAX_BYTES:
            raise TooLarge(f"an artifact may be at most {MAX_BYTES // (1024 * 1024)} MiB")
        received = await self.store.receive(assignment_id, name, body,
                                            limit=MAX_BYTES if expected_size is None else expected_size)
        try:
            self._verify(received.size, received.sha256, claim, row)
            if row is not None and row.status == ArtifactStatus.deleted:  # retention took it meanwhile
                return artifact_model(row), False
            target = self.store.path(assignment_id, name)
            if row is not None and row.status == ArtifactStatus.stored and target.is_file():
                return artifact_model(row), False  # a repeat: the first is kept, exactly once
            self.store.place(received, assignment_id, name)
        finally:
            self.store.discard(received)
        kind = claim.kind or (ArtifactKind(row.kind) if row is not None else pa.kind_of(name))
        async with self.pool.acquire() as conn:
            stored = await artifacts_store.mark_stored(
                conn, assignment_id, name, kind=str(kind), size=received.size, sha256=received.sha256,
                step_index=claim.step_index, taken_at=claim.taken_at)
        if stored is None:  # the assignment went away meanwhile (its job deleted)
            self.store.remove(assignment_id, name)
            raise NotFound(f"assignment {assignment_id} not found")
        if stored.status == ArtifactStatus.deleted:  # retention took it while its bytes came: they go too
            self.store.remove(assignment_id, name)
            return artifact_model(stored), False
        return artifact_model(stored), row is None or row.status != ArtifactStatus.stored

    @staticmethod
    def _verify(size: int, sha256: str, claim: Claim, row: ArtifactRecord | None) -> None:
        """422 naming ``bytes`` or ``sha256`` when the bytes are not what the agent or the result said."""
        for source, want_size, want_sha in (("the upload's headers", claim.size, claim.sha256),
                                            ("the run's result", row.bytes if row else None,
                                             row.sha256 if row else None)):
            if want_size is not None and size != want_size:
                raise Invalid.field("bytes", f"received {size} bytes, {source} said {want_size}")
            if want_sha is not None and sha256 != want_sha:
                raise Invalid.field("sha256", f"received bytes hash to {sha256}, {source} said {want_sha}")

    async def lost(self, agent_id: int, assignment_id: int, name: str, report: ArtifactLost) -> Artifact:
        """The agent lost its copy before sending it: the artifact lists as deleted, with the agent's reason."""
        self.store.path(assignment_id, name)
        row = await self._row(agent_id, assignment_id, name)
        if row is None and report.artifact is None:
            raise NotFound(f"no artifact {name!r} expected for assignment {assignment_id}")
        if report.artifact is not None and report.artifact.name != name:
            raise Invalid.field("artifact.name", "not the name in the path")
        described = report.artifact.model_dump() if report.artifact is not None else None
        async with self.pool.acquire() as conn:
            row = await artifacts_store.mark_lost(conn, assignment_id, name, f"lost on the agent: {report.reason}",
                                                  described)
        if row is None:
            raise NotFound(f"assignment {assignment_id} not found")
        log.warning("artifact lost on its agent",
                    extra={"assignment_id": assignment_id, "artifact": name, "reason": report.reason})
        return artifact_model(row)

    async def for_assignment(self, assignment_id: int) -> list[Artifact]:
        async with self.pool.acquire() as conn:
            rows = await artifacts_store.list_for_assignment(conn, assignment_id)
        items = [artifact_model(r) for r in rows]
        known = {r.name for r in rows}
        items += [Artifact(assignment_id=assignment_id, name=file, kind=pa.kind_of(file), bytes=size, sha256=None,
                           status=ArtifactStatus.stored)  # kept before uploads were recorded
                  for file, size in self.store.files(assignment_id) if file not in known]
        return items

    async def for_device(self, device_id: int, *, kind: str | None, before: int | None, limit: int
                         ) -> ArtifactPage:
        async with self.pool.acquire() as conn:
            rows = await artifacts_store.list_for_device(conn, device_id, kind=kind, before=before, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return ArtifactPage(items=[artifact_model(r) for r in rows], next_before=rows[-1].id if more else None)
