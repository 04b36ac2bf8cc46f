"""phonefleet's migrations through the Supabase CLI: exported in its naming, applied by ``supabase db push``
(recorded in its own history table), and adopted by the server's migrator rather than run twice."""

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from phonefleet.server import supabase_realtime
from phonefleet.server.database import migrate, migrations_dir
from phonefleet.server.supabase_migrations import ExportConflict, export_migrations

OURS = sorted(p.stem for p in migrations_dir().glob("*.sql"))


def _server_cli(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "phonefleet.server.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_export_writes_every_migration_in_the_cli_naming_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "supabase" / "migrations"
    done = _server_cli("supabase", "export-migrations", str(target))
    assert done.returncode == 0, done.stderr
    assert sorted(p.stem for p in target.glob("*.sql")) == OURS
    assert all(re.fullmatch(r"[0-9]+_[a-z0-9_]+", stem) for stem in OURS), "the CLI's <version>_<name>.sql"
    assert "supabase migration repair --status applied " + " ".join(s.split("_")[0] for s in OURS) in done.stdout
    again = export_migrations(target)
    assert again.written == [] and len(again.unchanged) == len(OURS)
    (target / f"{OURS[0]}.sql").write_text("-- someone else's\n")
    with pytest.raises(ExportConflict):
        export_migrations(target)
    refused = _server_cli("supabase", "export-migrations", str(target))
    assert refused.returncode == 1 and OURS[0] in refused.stderr and "Traceback" not in refused.stderr
    assert (target / f"{OURS[0]}.sql").read_text() == "-- someone else's\n", "never overwritten"


async def test_migrate_adopts_the_versions_the_cli_recorded_and_runs_only_the_rest(bare_db: str) -> None:
    """The CLI's history table as ``supabase db push`` (3.1) makes it: version, statements, name."""
    first = migrations_dir() / f"{OURS[0]}.sql"
    conn = await asyncpg.connect(bare_db)
    try:
        await conn.execute(first.read_text())
        await conn.execute("CREATE SCHEMA supabase_migrations; CREATE TABLE supabase_migrations.schema_migrations"
                           " (version text PRIMARY KEY, statements text[], name text)")
        version, name = OURS[0].split("_", 1)
        await conn.execute("INSERT INTO supabase_migrations.schema_migrations VALUES ($1, '{}', $2)", version, name)
        assert await migrate(conn) == OURS[1:], "the first is adopted, not run again"
        assert [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")] == OURS
    finally:
        await conn.close()


async def test_a_cli_history_the_role_cannot_read_is_not_guessed_at(limited_db: tuple[str, str]) -> None:
    admin, owner = limited_db
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute("CREATE SCHEMA supabase_migrations; CREATE TABLE supabase_migrations.schema_migrations"
                           " (version text PRIMARY KEY, statements text[], name text)")
        version, name = OURS[0].split("_", 1)
        await conn.execute("INSERT INTO supabase_migrations.schema_migrations VALUES ($1, '{}', $2)", version, name)
    finally:
        await conn.close()
    conn = await asyncpg.connect(owner)
    try:
        assert await migrate(conn) == OURS, "another role's history (no USAGE here) adopts nothing and breaks nothing"
    finally:
        await conn.close()


def _cli_url(dsn: str) -> str:
    """The CLI (Go) reads no ``postgresql://user:@/db?host=/socket/dir``: a host and a password (unused under
    trust) must be there, and the socket dir stays in ``host=``."""
    parts = urlsplit(dsn)
    socket_dir = parse_qs(parts.query).get("host")
    user = parts.username or "postgres"
    if socket_dir:
        return f"postgresql://{user}:unused@localhost{parts.path}?host={socket_dir[0]}"
    return dsn


def _push(cli: str, workdir: Path, dsn: str, *args: str) -> "subprocess.CompletedProcess[str]":
    done = subprocess.run([cli, *args, "--db-url", _cli_url(dsn), "--yes"], cwd=workdir, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done


async def test_supabase_db_push_applies_the_migrations_and_the_server_adopts_them(
        supabase_cli: str, bare_db: str, tmp_path: Path) -> None:
    export_migrations(tmp_path / "supabase" / "migrations")
    conn = await asyncpg.connect(bare_db)
    try:
        await conn.execute("CREATE PUBLICATION supabase_realtime")  # as a Supabase project has it
    finally:
        await conn.close()
    await asyncio.to_thread(_push, supabase_cli, tmp_path, bare_db, "db", "push")
    conn = await asyncpg.connect(bare_db)
    try:
        assert (await supabase_realtime.state(conn)).published == supabase_realtime.REALTIME_TABLES, \
            "the CLI ran 0014's DO block as the server would"
        recorded = [f"{r['version']}_{r['name']}" for r in
                    await conn.fetch("SELECT version, name FROM supabase_migrations.schema_migrations ORDER BY 1")]
        assert recorded == OURS
        assert await conn.fetchval("SELECT to_regclass('public.jobs')") is not None
        assert await migrate(conn) == [], "everything adopted, nothing run twice"
        assert [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")] == OURS
    finally:
        await conn.close()
    again = await asyncio.to_thread(_push, supabase_cli, tmp_path, bare_db, "db", "push")
    assert "up to date" in again.stdout + again.stderr


async def test_supabase_db_push_after_the_server_migrated_needs_only_the_printed_repair(
        supabase_cli: str, bare_db: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(bare_db)
    try:
        assert await migrate(conn) == OURS
    finally:
        await conn.close()
    exported = _server_cli("supabase", "export-migrations", str(tmp_path / "supabase" / "migrations"))
    repair = re.search(r"supabase (migration repair --status applied [0-9 ]+) --db-url", exported.stdout)
    assert repair is not None, exported.stdout
    await asyncio.to_thread(_push, supabase_cli, tmp_path, bare_db, *repair.group(1).split())
    pushed = await asyncio.to_thread(_push, supabase_cli, tmp_path, bare_db, "db", "push")
    assert "up to date" in pushed.stdout + pushed.stderr
