"""The durable outbox: every event for the server is written here first and leaves only when acked.

SQLite in the agent's state directory, in WAL mode; a crash or restart of the agent (or the
server) loses nothing: whatever was not acknowledged is replayed, in order, and the server's
state machine makes a replayed result a no-op. Items are stored as the JSON objects they travel as
(a protocol model is dumped on the way in), so an agent upgraded with results still in its outbox
sends them as they are.
"""

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from phonefleet.protocol.artifacts import ArtifactInfo, ArtifactKind


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    event: str
    data: dict[str, Any]
    created_at: float


class ArtifactUpload(BaseModel):
    """The outbox entry for a run's file (``ARTIFACT_UPLOAD``): sent over HTTP, not as a socket event.

    It carries what the file must be (size and sha256, taken where its bytes were made), so the server keeps
    only bytes that match and the agent notices a local copy that changed. An older agent's entry has only
    ``assignment_id`` and ``name``: its file is hashed as it is sent."""

    assignment_id: int
    name: str = Field(min_length=1)
    kind: ArtifactKind | None = None
    bytes: int | None = Field(default=None, ge=0)
    sha256: str | None = None
    step_index: int | None = None
    taken_at: datetime | None = None

    @classmethod
    def of(cls, assignment_id: int, info: ArtifactInfo) -> "ArtifactUpload":
        return cls(assignment_id=assignment_id, **info.model_dump())


def _json(data: BaseModel | dict[str, Any]) -> str:
    if isinstance(data, BaseModel):
        return data.model_dump_json(exclude_none=True)
    return json.dumps(data, default=str)


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL, data TEXT NOT NULL,"
            " created_at REAL NOT NULL)"
        )

    def put(self, event: str, data: BaseModel | dict[str, Any]) -> int:
        with self._lock:
            return self.insert(self._db, event, data)

    @staticmethod
    def insert(db: sqlite3.Connection, event: str, data: BaseModel | dict[str, Any]) -> int:
        """Add an event on ``db`` (inside a ``transaction`` of this outbox)."""
        cur = db.execute(
            "INSERT INTO outbox (event, data, created_at) VALUES (?, ?, ?)",
            (event, _json(data), time.time()),
        )
        return int(cur.lastrowid or 0)

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic write to this database (the run journal shares it, so a result and the end of its
        journal entry land together). ``durable`` syncs it to disk before returning, against power loss."""
        with self._lock:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    def peek(self, limit: int = 500, *, only: str | None = None, besides: str | None = None,
             after: int = 0) -> list[OutboxItem]:
        """The oldest items (after id ``after``): all of them, ``only`` those of one event, or all ``besides`` one."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, event, data, created_at FROM outbox WHERE id > :after"
                " AND (:only IS NULL OR event = :only) AND (:besides IS NULL OR event <> :besides)"
                " ORDER BY id LIMIT :limit",
                {"after": after, "only": only, "besides": besides, "limit": limit},
            ).fetchall()
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def oldest_id(self, *, besides: str) -> int | None:
        """The id of the oldest item that is not a ``besides`` event (None: there is none), its data left unread."""
        with self._lock:
            row = self._db.execute("SELECT min(id) FROM outbox WHERE event <> ?", (besides,)).fetchone()
        return None if row[0] is None else int(row[0])

    def ack(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._lock:
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
