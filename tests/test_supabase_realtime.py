"""Supabase Realtime: where the ``supabase_realtime`` publication exists, jobs, assignments and devices are
in it, and a job's life reaches a logical replication slot (a PostgreSQL of our own with wal_level=logical);
on plain PostgreSQL nothing changes."""

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from phonefleet.server import supabase_realtime
from phonefleet.server.database import migrate
from phonefleet.server.embedded_postgres import EmbeddedPostgres, pg_ctl, running_postmaster
from tests import conftest
from tests.conftest import _with_db, drop_database, eventually, open_url_job, start_server
from tests.pgoutput import Change, decode
from tests.supabase_fixtures import create_empty_database

SLOT = "realtime_test"


async def _set_logical(uri: str) -> None:
    conn = await asyncpg.connect(uri)
    try:
        await conn.execute("ALTER SYSTEM SET wal_level = logical")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def logical_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL of its own restarted with wal_level=logical (no machine PostgreSQL needed)."""
    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("pg-logical"))
    uri = embedded.start()
    try:
        asyncio.run(_set_logical(uri))
        pg_ctl(embedded.data_dir, "-w", "-m", "fast", "restart")
        postmaster = running_postmaster(embedded.data_dir)
        assert postmaster is not None and postmaster.status == "ready"
        yield postmaster.uri
    finally:
        embedded.stop()


@pytest.fixture
async def logical_db(logical_root: str) -> AsyncIterator[str]:
    """An empty database on the logical PostgreSQL (its slot, if any, is dropped before it)."""
    name = await create_empty_database(logical_root)
    dsn = _with_db(logical_root, name)
    yield dsn
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                           "WHERE database = current_database()")
    finally:
        await conn.close()
    await drop_database(logical_root, name)


async def _state(dsn: str) -> supabase_realtime.RealtimeState:
    conn = await asyncpg.connect(dsn)
    try:
        return await supabase_realtime.state(conn)
    finally:
        await conn.close()


async def _run(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def _server_cli(dsn: str, *args: str) -> "subprocess.CompletedProcess[str]":
    env = {**os.environ, "DATABASE_URL": dsn}
    return subprocess.run([sys.executable, "-m", "phonefleet.server.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


async def test_realtime_migration_changes_nothing_on_plain_postgresql(dsn: str) -> None:
    state = await _state(dsn)
    assert not state.publication
    assert state.replica_identity == {"jobs": "default", "assignments": "default", "devices": "default"}
    done = await asyncio.to_thread(_server_cli, dsn, "supabase", "realtime")
    assert done.returncode == 1 and "no supabase_realtime publication" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


async def test_migrations_add_the_tables_to_an_existing_publication(bare_db: str) -> None:
    await _run(bare_db, "CREATE PUBLICATION supabase_realtime")  # as every Supabase project has it, empty
    await _migrate(bare_db)
    state = await _state(bare_db)
    assert state.published == ("jobs", "assignments", "devices") and state.missing == ()
    assert state.replica_identity == {"jobs": "full", "assignments": "default", "devices": "default"}


async def test_publication_created_later_is_joined_by_the_cli_and_warned_of_at_start(
        dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    await _run(dsn, "CREATE PUBLICATION supabase_realtime")
    conn = await asyncpg.connect(dsn)
    try:
        with caplog.at_level(logging.WARNING, logger="phonefleet.server.supabase_realtime"):
            state = await supabase_realtime.missing_at_start(conn)
    finally:
        await conn.close()
    assert state.missing == ("jobs", "assignments", "devices")
    assert any("phonefleet-server supabase realtime" in r.getMessage() for r in caplog.records)
    done = await asyncio.to_thread(_server_cli, dsn, "supabase", "realtime")
    assert done.returncode == 0, done.stderr
    assert "published: jobs, assignments, devices" in done.stdout
    assert (await _state(dsn)).missing == ()
    again = await asyncio.to_thread(_server_cli, dsn, "supabase", "realtime")
    assert again.returncode == 0 and "published: jobs, assignments, devices" in again.stdout


async def test_a_non_superuser_owner_migrates_beside_a_publication_it_does_not_own(
        limited_db: tuple[str, str]) -> None:
    admin, owner = limited_db
    await _run(admin, "CREATE PUBLICATION supabase_realtime")  # another role's
    applied = await _migrate(owner)
    assert supabase_realtime.REALTIME_MIGRATION in applied, "the migration applies, with a warning"
    assert (await _state(owner)).missing == ("jobs", "assignments", "devices")
    conn = await asyncpg.connect(owner)
    try:
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        role = await conn.fetchval("SELECT current_user")
    finally:
        await conn.close()
    # As on Supabase: the role that runs the migrations owns the publication (not a superuser).
    await _run(admin, f"ALTER PUBLICATION supabase_realtime OWNER TO {role}")
    conn = await asyncpg.connect(owner)
    try:
        state = await supabase_realtime.publish(conn)
    finally:
        await conn.close()
    assert state.published == ("jobs", "assignments", "devices")
    assert state.replica_identity["jobs"] == "full"


async def _slot_changes(dsn: str) -> list[Change]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, 'proto_version', '1', "
            "'publication_names', 'supabase_realtime')", SLOT)
    finally:
        await conn.close()
    return decode([bytes(r["data"]) for r in rows])


async def test_a_jobs_life_reaches_a_logical_slot_through_the_publication(logical_db: str, tmp_path: Path) -> None:
    await _run(logical_db, "CREATE PUBLICATION supabase_realtime")
    await _migrate(logical_db)
    await _run(logical_db, f"SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')")
    server = await start_server(conftest.test_settings(logical_db, tmp_path))
    try:
        agent = await server.sim_agent("pc", 1)
        job = await server.ok("POST", "/api/jobs", open_url_job(title="realtime"))
        await agent.wait_for(lambda: len(agent.orders) == 1)
        await agent.start(sorted(agent.orders))
        await agent.finish(sorted(agent.orders))

        async def completed() -> bool:
            body: dict[str, Any] = await server.ok("GET", f"/api/jobs/{job['id']}")
            return bool(body["status"] == "completed")

        await eventually(completed)
    finally:
        await server.close()
    changes = await _slot_changes(logical_db)
    assert {c.table for c in changes} <= {"jobs", "assignments", "devices"}, "only the published tables"
    job_id = str(job["id"])
    jobs = [c for c in changes if c.table == "jobs" and (c.new.get("id") or (c.old or {}).get("id")) == job_id]
    assert jobs[0].op == "insert" and jobs[0].new["title"] == "realtime"
    ended = [c for c in jobs if c.op == "update" and c.new["status"] == "completed"]
    assert ended, [(c.op, c.new.get("status")) for c in jobs]
    assert ended[0].old is not None and ended[0].old["status"] != "completed", "FULL: the status it left"
    assert ended[0].old["title"] == "realtime", "FULL: the whole old row"
    runs = [c for c in changes if c.table == "assignments" and c.new.get("job_id") == job_id]
    assert runs[0].op == "insert"
    assert [c.new["status"] for c in runs][-1] == "completed"
    assert all(c.old is None for c in runs if c.op == "update"), "DEFAULT: no old row on the hot path"
    phone = [c.new["state"] for c in changes if c.table == "devices" and c.new.get("serial") == "pc-000"]
    assert "busy" in phone and phone[-1] == "idle", phone
