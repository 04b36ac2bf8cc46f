"""Migrations: ordered, recorded, idempotent, safe to race, and fine without superuser rights
(a Supabase project's ``postgres`` role is not a superuser)."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from phonefleet.server.database import migrate, migrations_dir
from tests.conftest import _with_db


@pytest.fixture
async def limited_db(pg_root: str) -> AsyncIterator[str]:
    """An empty database owned by a role with no superuser, no CREATEDB and no CREATEROLE."""
    suffix = uuid.uuid4().hex[:8]
    role, db = f"pf_limited_{suffix}", f"pf_limited_db_{suffix}"
    conn = await asyncpg.connect(pg_root)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        await conn.execute(f"CREATE DATABASE {db} OWNER {role}")
    finally:
        await conn.close()
    base = _with_db(pg_root, db)
    scheme, rest = base.split("://", 1)
    creds, _, hostpart = rest.rpartition("@")
    del creds
    yield f"{scheme}://{role}@{hostpart}"
    conn = await asyncpg.connect(pg_root)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await conn.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        await conn.close()


async def test_migrations_apply_without_superuser_and_are_recorded(limited_db: str) -> None:
    conn = await asyncpg.connect(limited_db)
    try:
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        applied = await migrate(conn)
        assert applied == sorted(p.stem for p in migrations_dir().glob("*.sql"))
        assert await migrate(conn) == [], "a second run applies nothing"
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == applied
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {"agents", "devices", "jobs", "assignments", "job_events", "schema_migrations"} <= tables
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_once(limited_db: str) -> None:
    conns = [await asyncpg.connect(limited_db) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(list(migrations_dir().glob("*.sql")))]
    finally:
        for c in conns:
            await c.close()
