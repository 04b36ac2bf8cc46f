"""What the ``supabase_realtime`` publication holds of phonefleet's tables (Supabase Realtime's feed)."""

from phonefleet.server.store import Conn

PUBLICATION = "supabase_realtime"


async def exists(conn: Conn) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", PUBLICATION))


async def published(conn: Conn, tables: tuple[str, ...]) -> list[str]:
    """Those of ``tables`` (in this schema) whose changes the publication carries, in the order given."""
    rows = await conn.fetch(
        "SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = current_schema()"
        " AND tablename = ANY($2::text[])", PUBLICATION, list(tables))
    found = {r["tablename"] for r in rows}
    return [t for t in tables if t in found]


async def replica_identities(conn: Conn, tables: tuple[str, ...]) -> dict[str, str]:
    """Each table's replica identity: ``default`` (primary key), ``full``, ``nothing`` or ``index``."""
    rows = await conn.fetch(
        "SELECT c.relname, c.relreplident::text AS relreplident FROM pg_class c"
        " WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1::text[])", list(tables))
    names = {"d": "default", "f": "full", "n": "nothing", "i": "index"}
    return {r["relname"]: names[r["relreplident"]] for r in rows}
