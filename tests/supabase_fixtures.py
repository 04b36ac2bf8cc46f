"""Fixtures: empty (unmigrated) databases, one owned by a role with no superuser rights (a Supabase
project's ``postgres`` role is not a superuser); the Supabase CLI, where installed."""

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import _with_db, drop_database


async def create_empty_database(root: str, *, owner: str | None = None) -> str:
    name = f"pf_sb_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(root)
    try:
        await conn.execute(f"CREATE DATABASE {name}" + (f" OWNER {owner}" if owner else ""))
    finally:
        await conn.close()
    return name


@pytest.fixture
async def bare_db(pg_root: str) -> AsyncIterator[str]:
    """An empty database on the suite's PostgreSQL (not migrated, unlike ``dsn``)."""
    name = await create_empty_database(pg_root)
    yield _with_db(pg_root, name)
    await drop_database(pg_root, name)


@pytest.fixture
async def limited_db(pg_root: str) -> AsyncIterator[tuple[str, str]]:
    """(superuser DSN, owner DSN) of an empty database owned by a role with no superuser rights."""
    role = f"pf_rt_owner_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_root)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    finally:
        await conn.close()
    name = await create_empty_database(pg_root, owner=role)
    admin = _with_db(pg_root, name)
    scheme, rest = admin.split("://", 1)
    yield admin, f"{scheme}://{role}@{rest.rpartition('@')[2]}"
    await drop_database(pg_root, name)
    conn = await asyncpg.connect(pg_root)
    try:
        await conn.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        await conn.close()


TOOLS_CLI = Path(__file__).resolve().parent / "tools" / "node_modules" / ".bin" / "supabase"
"""Where ``make test`` installs the Supabase CLI (``tests/tools/package.json``)."""


@pytest.fixture
def supabase_cli() -> str:
    path = os.environ.get("SUPABASE_CLI") or (str(TOOLS_CLI) if TOOLS_CLI.exists() else shutil.which("supabase"))
    if not path:
        pytest.skip("the Supabase CLI is not installed here (make test installs it into tests/tools; or set "
                    "SUPABASE_CLI to a supabase binary)")
    return path
