"""Supabase Realtime: phonefleet's jobs, assignments and devices in the ``supabase_realtime`` publication.

Migration 0014 adds them when the publication exists; a publication made later (Realtime enabled after
phonefleet was installed) is joined by running that same idempotent migration again: ``publish``, which
``phonefleet-server supabase realtime`` calls. A server start only warns (``missing_at_start``): adding
tables to a publication is an operator's choice, not something to redo behind their back on every start."""

import logging
from dataclasses import dataclass

from phonefleet.server.database import migrations_dir
from phonefleet.server.store import Conn
from phonefleet.server.store import publication as publication_store

log = logging.getLogger(__name__)

REALTIME_MIGRATION = "0014_supabase_realtime"
REALTIME_TABLES = ("jobs", "assignments", "devices")


@dataclass(frozen=True, slots=True)
class RealtimeState:
    publication: bool
    """Whether the ``supabase_realtime`` publication exists (it does in every Supabase project)."""
    published: tuple[str, ...]
    missing: tuple[str, ...]
    replica_identity: dict[str, str]


async def state(conn: Conn) -> RealtimeState:
    identities = await publication_store.replica_identities(conn, REALTIME_TABLES)
    if not await publication_store.exists(conn):
        return RealtimeState(False, (), REALTIME_TABLES, identities)
    published = tuple(await publication_store.published(conn, REALTIME_TABLES))
    return RealtimeState(True, published, tuple(t for t in REALTIME_TABLES if t not in published), identities)


async def publish(conn: Conn) -> RealtimeState:
    """Run migration 0014 again (a no-op without the publication, or with every table in it); the outcome."""
    sql = (migrations_dir() / f"{REALTIME_MIGRATION}.sql").read_text()
    async with conn.transaction():
        await conn.execute(sql)
    return await state(conn)


async def missing_at_start(conn: Conn) -> RealtimeState:
    """Warn, once at start, of a publication that lacks some of phonefleet's tables."""
    current = await state(conn)
    if current.publication and current.missing:
        log.warning("supabase_realtime lacks phonefleet tables; run `phonefleet-server supabase realtime`",
                    extra={"missing": list(current.missing)})
    return current
