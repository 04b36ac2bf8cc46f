"""The database: the pool and migrations (the embedded PostgreSQL, used when no URL is given, has its
own module and is re-exported here)."""

import asyncio
import json
import logging
from pathlib import Path

import asyncpg

from phonefleet.server import outage
from phonefleet.server.embedded_postgres import EmbeddedPostgres
from phonefleet.server.store import Conn

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 0x70686F6E65666C74  # "phonefltq" in ASCII-ish; any constant shared by all nodes

Pool = asyncpg.Pool
__all__ = ["EmbeddedPostgres", "Pool", "create_pool", "migrate", "migrations_dir", "supabase_cli_history",
           "wait_for_database"]


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _no_session_reset(_conn: asyncpg.Connection) -> None:
    """Pooled connections keep no session state (no SET, LISTEN or session advisory lock outlives its
    use; transactions are context managers, and asyncpg rolls back a stray one before this runs), so
    the default reset query, a round trip on every release, buys nothing."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10, timeout_sec: float = 60.0) -> asyncpg.Pool:
    """Connects and queries give up after ``timeout_sec``; a connect that fails is ``DatabaseUnavailable``."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=timeout_sec,
        timeout=timeout_sec, connect=outage.connect, reset=_no_session_reset,
    )
    assert pool is not None
    return pool


def migrations_dir() -> Path:
    """Installed wheels carry the SQL as package data; a checkout reads the top-level folder."""
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


async def migrate(conn: Conn, directory: Path | None = None) -> list[str]:
    """Apply pending ``NNNN_name.sql`` files in order, under an advisory lock, each in a transaction."""
    directory = directory or migrations_dir()
    files = sorted(p for p in directory.glob("*.sql"))
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        pushed = await supabase_cli_history(conn)
        for path in files:
            version = path.stem
            if version in done:
                continue
            if version in pushed:  # applied by `supabase db push`: adopted into our history, not run again
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                log.info("migration adopted from the supabase cli", extra={"version": version})
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
            log.info("migration applied", extra={"version": version})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied


async def supabase_cli_history(conn: Conn) -> set[str]:
    """The migrations ``supabase db push`` recorded (file ``0001_initial.sql`` is its version ``0001``, name
    ``initial``), as our versions (``0001_initial``): empty where the CLI never ran (or its table is not ours
    to read: then what it applied fails here loudly rather than being guessed)."""
    readable = await conn.fetchval(
        "SELECT has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'supabase_migrations' AND c.relname = 'schema_migrations'")
    if not readable:
        return set()
    rows = await conn.fetch("SELECT version, name FROM supabase_migrations.schema_migrations WHERE name IS NOT NULL")
    return {f"{r['version']}_{r['name']}" for r in rows}


async def wait_for_database(dsn: str, patience_sec: float = 30.0) -> None:
    """Wait for a database that is still starting (docker-compose) rather than failing at once."""
    deadline = asyncio.get_running_loop().time() + patience_sec
    while True:
        try:
            conn = await asyncpg.connect(dsn)
            await conn.close()
            return
        except (OSError, asyncpg.PostgresError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
