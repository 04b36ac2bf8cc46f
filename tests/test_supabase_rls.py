"""Supabase Row Level Security: in a PostgreSQL of our own that has Supabase's roles (anon, authenticated,
service_role, and the authenticator PostgREST logs in as), with Supabase's default privileges, the migrations leave
an authenticated user (``SET ROLE authenticated`` with ``request.jwt.claims`` set as PostgREST sets them) reading
only their person's teams' rows, anon nothing and nobody the secrets, while phonefleet's own connection (a
non-superuser owner, as a Supabase project's ``postgres``) and the server work as before. Roles made after the
migrations ran are caught up by a server start and by ``phonefleet-server supabase rls``; plain PostgreSQL is left
as it was. The roles live in their own cluster: they are cluster-wide, and the suite's other tests must not see them.
"""

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest

from phonefleet.server import supabase_rls
from phonefleet.server.database import migrate
from phonefleet.server.embedded_postgres import EmbeddedPostgres
from phonefleet.server.store import row_security
from phonefleet.server.supabase_migrations import export_migrations
from tests import conftest
from tests.conftest import _with_db, drop_database, eventually, open_url_job, start_server
from tests.supabase_fixtures import create_empty_database
from tests.test_supabase_auth import SECRET, claims
from tests.test_supabase_migrations import _push

OWNER = "pf_owner"
"""phonefleet's own role: owns the tables, no superuser, no BYPASSRLS (as Supabase's ``postgres`` runs migrations)."""

SUPABASE_ROLES = """
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator LOGIN NOINHERIT;
GRANT anon, authenticated, service_role TO authenticator;
"""

SUPABASE_GRANTS = """
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""
"""What a Supabase project grants its API roles: everything on every table its ``postgres`` role makes."""

SECRETS = ["SELECT password_hash FROM people", "SELECT email FROM people", "SELECT supabase_sub FROM people",
           "SELECT * FROM people", "SELECT token_hash FROM agents", "SELECT * FROM agents",
           "SELECT * FROM person_sessions", "SELECT * FROM person_tokens", "SELECT * FROM admin_tokens",
           "SELECT * FROM sign_in_attempts", "SELECT * FROM schema_migrations"]

READABLE = ["teams", "team_members", "jobs", "assignments", "assignment_steps", "artifacts", "job_events", "devices",
            "device_events", "agent_job_pauses", "schedules", "audit_events", "fleet_policy", "scheduler_state"]


async def _run(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _as(dsn: str, role: str) -> str:
    scheme, rest = dsn.split("://", 1)
    return f"{scheme}://{role}@{rest.rpartition('@')[2]}"


def _cluster(path: Path, *, roles: bool) -> tuple[EmbeddedPostgres, str]:
    embedded = EmbeddedPostgres(path)
    uri = embedded.start()
    asyncio.run(_run(uri, (SUPABASE_ROLES if roles else "")
                     + f"CREATE ROLE {OWNER} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;"))
    return embedded, uri


@pytest.fixture(scope="module")
def supabase_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL of its own with Supabase's roles."""
    embedded, uri = _cluster(tmp_path_factory.mktemp("pg-supabase"), roles=True)
    try:
        yield uri
    finally:
        embedded.stop()


async def _owned_database(root: str) -> str:
    """An empty database owned by phonefleet's role, with Supabase's grants (where its roles exist)."""
    name = await create_empty_database(root, owner=OWNER)
    dsn = _with_db(root, name)
    conn = await asyncpg.connect(dsn)
    try:
        if await row_security.supabase_roles_exist(conn):
            await conn.execute(SUPABASE_GRANTS.format(owner=OWNER))
    finally:
        await conn.close()
    return dsn


@pytest.fixture
async def supabase_db(supabase_root: str) -> AsyncIterator[str]:
    """(As the superuser) a database of that PostgreSQL, migrated by phonefleet's role."""
    dsn = await _owned_database(supabase_root)
    conn = await asyncpg.connect(_as(dsn, OWNER))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield dsn
    await drop_database(supabase_root, dsn.rsplit("/", 1)[1].split("?")[0])


async def _read(dsn: str, role: str, sql: str, sub: str | None = None) -> list[asyncpg.Record]:
    """``sql`` as PostgREST runs it: logged in as authenticator, ``SET LOCAL ROLE``, the JWT's claims set local."""
    conn = await asyncpg.connect(_as(dsn, "authenticator"))
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {role}")
            if sub is not None:
                await conn.execute("SELECT set_config('request.jwt.claims', $1, true)",
                                   json.dumps({"sub": sub, "role": role, "aud": "authenticated"}))
            return await conn.fetch(sql)
    finally:
        await conn.close()


async def _ids(dsn: str, table: str, sub: str, column: str = "id") -> set[Any]:
    return {r[0] for r in await _read(dsn, "authenticated", f"SELECT {column} FROM {table}", sub)}


def _token(sub: str, email: str) -> str:
    return jwt.encode(claims(sub=sub, email=email), SECRET, algorithm="HS256")


async def test_authenticated_reads_its_teams_rows_anon_nothing_and_nobody_the_secrets(
        supabase_db: str, tmp_path: Path) -> None:
    owner = _as(supabase_db, OWNER)
    srv = await start_server(conftest.test_settings(owner, tmp_path, supabase_jwt_secret=SECRET))
    try:
        users = {"ada": "u-ada", "bob": "u-bob", "root": "u-root", "dis": "u-dis"}
        for name, sub in users.items():  # each Supabase user's first request makes their person
            assert (await srv.request("GET", "/api/session", token=_token(sub, f"{name}@example.com")))[0] == 200
        await srv.ok("PATCH", "/api/users/root", {"role": "admin"})
        await srv.ok("PATCH", "/api/users/dis", {"disabled": True})
        conn = await asyncpg.connect(owner)
        try:
            await conn.execute("INSERT INTO teams (id, name) VALUES (2, 'blue')")
            await conn.execute("UPDATE team_members SET team_id = 2 FROM people p"
                               " WHERE p.id = person_id AND p.name = 'bob'")
            await conn.execute("DELETE FROM team_members USING people p WHERE p.id = person_id AND p.name = 'root'")
        finally:
            await conn.close()
        await srv.sim_agent("red", 1)
        blue = await srv.sim_agent("blue", 1)
        conn = await asyncpg.connect(owner)
        try:
            await conn.execute("UPDATE agents SET team_id = 2 WHERE name = 'blue'")
        finally:
            await conn.close()
        one = {"target_type": "device_count", "target_value": 1}
        job_a = await srv.ok("POST", "/api/jobs", open_url_job(title="red job", team_id=1, **one))
        job_b = await srv.ok("POST", "/api/jobs", open_url_job(title="blue job", team_id=2, **one))
        await blue.wait_for(lambda: len(blue.orders) == 1)
        await blue.start(sorted(blue.orders))
        await blue.finish(sorted(blue.orders))

        async def blue_done() -> bool:
            return bool((await srv.ok("GET", f"/api/jobs/{job_b['id']}"))["status"] == "completed")

        await eventually(blue_done)
        runs = {j: {a["id"] for a in (await srv.ok("GET", f"/api/jobs/{j}/assignments"))["items"]}
                for j in (job_a["id"], job_b["id"])}
        assert all(len(r) == 1 for r in runs.values()), runs
        devices = {d["serial"]: d["id"] for d in await srv.ok("GET", "/api/devices")}
        agents = {a["name"]: a["id"] for a in await srv.ok("GET", "/api/agents")}

        # ada (team default) and bob (team blue) read their own team's rows only
        assert await _ids(supabase_db, "jobs", users["ada"]) == {job_a["id"]}
        assert await _ids(supabase_db, "jobs", users["bob"]) == {job_b["id"]}
        assert await _ids(supabase_db, "assignments", users["ada"]) == runs[job_a["id"]]
        assert await _ids(supabase_db, "assignments", users["bob"]) == runs[job_b["id"]]
        assert await _ids(supabase_db, "job_events", users["bob"], "DISTINCT job_id") == {job_b["id"]}
        assert await _ids(supabase_db, "devices", users["ada"]) == {devices["red-000"]}
        assert await _ids(supabase_db, "devices", users["bob"]) == {devices["blue-000"]}
        assert await _ids(supabase_db, "agents", users["bob"]) == {agents["blue"]}
        assert await _ids(supabase_db, "teams", users["ada"]) == {1}
        assert await _ids(supabase_db, "teams", users["bob"]) == {2}
        assert await _ids(supabase_db, "team_members", users["bob"], "DISTINCT team_id") == {2}
        assert await _ids(supabase_db, "people", users["bob"], "name") == {"bob"}
        assert await _ids(supabase_db, "people", users["ada"], "name") == {"ada", "dis"}, "their team's members"
        assert await _ids(supabase_db, "audit_events", users["ada"]) == set(), "the audit trail is admins'"
        # an admin reads every team's; a disabled person and a user no person matches read nothing
        assert await _ids(supabase_db, "jobs", users["root"]) == {job_a["id"], job_b["id"]}
        assert await _ids(supabase_db, "agents", users["root"]) == set(agents.values())
        assert await _ids(supabase_db, "people", users["root"], "name") == set(users)
        assert await _ids(supabase_db, "audit_events", users["root"])
        for sub in (users["dis"], "u-nobody"):
            for table in READABLE:
                assert await _read(supabase_db, "authenticated", f"SELECT * FROM {table}", sub) == [], (sub, table)
        assert await _read(supabase_db, "authenticated", "SELECT id FROM jobs") == [], "no claims, no rows"

        # anon holds no privilege on any of phonefleet's tables; nobody of Supabase's reads the secrets
        for table in supabase_rls.RLS_TABLES:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await _read(supabase_db, "anon", f"SELECT 1 FROM {table}")
        for sql in SECRETS:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await _read(supabase_db, "authenticated", sql, users["root"])
        # authenticated only reads: every change goes through phonefleet's API
        for sql in (f"UPDATE jobs SET title = 'x' WHERE id = {job_a['id']}",
                    f"DELETE FROM jobs WHERE id = {job_a['id']}",
                    "INSERT INTO teams (name) VALUES ('mine')", "UPDATE people SET role = 'admin'",
                    "SELECT nextval('jobs_id_seq')"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await _read(supabase_db, "authenticated", sql, users["root"])
        # service_role (BYPASSRLS, the project's own key) keeps what Supabase granted it
        assert len(await _read(supabase_db, "service_role", "SELECT id FROM jobs")) == 2

        # phonefleet's own connection reads and writes everything, the server goes on working
        await srv.ok("PATCH", f"/api/jobs/{job_a['id']}", {"status": "cancelled"})
        assert {j["id"] for j in (await srv.ok("GET", "/api/jobs"))["items"]} == {job_a["id"], job_b["id"]}
        assert (await srv.request("GET", "/api/session", token=_token("u-new", "new@example.com")))[0] == 200
    finally:
        await srv.close()


async def test_every_table_gets_rls_and_the_privileges_supabase_granted_are_taken_back(supabase_db: str) -> None:
    conn = await asyncpg.connect(supabase_db)
    try:
        assert await row_security.tables(conn) == sorted(supabase_rls.RLS_TABLES), \
            "a new table needs RLS on Supabase (a migration like 0017) and its name in RLS_TABLES"
        state = await supabase_rls.state(conn)
        assert state.roles and state.unprotected == ()
        assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                                   " AND relkind = 'r' AND relforcerowsecurity") == 0, "the owner is not limited"
        granted = await conn.fetch(
            "SELECT c.relname, r.rolname, p.privilege FROM pg_class c"
            " CROSS JOIN (VALUES ('anon'), ('authenticated')) AS r (rolname)"
            " CROSS JOIN (VALUES ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'), ('REFERENCES'), ('TRIGGER'))"
            "   AS p (privilege)"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
            "   AND has_table_privilege(r.rolname, c.oid, p.privilege)")
        assert granted == []
        sequences = await conn.fetch(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'"
            " AND (has_sequence_privilege('anon', c.oid, 'USAGE') OR has_sequence_privilege('authenticated', c.oid,"
            " 'USAGE'))")
        assert sequences == []
        before = await conn.fetchval("SELECT count(*) FROM pg_policies")
    finally:
        await conn.close()
    conn = await asyncpg.connect(_as(supabase_db, OWNER))
    try:
        again = await supabase_rls.protect(conn)  # as `phonefleet-server supabase rls` does
        assert again.roles and again.unprotected == ()
        assert await conn.fetchval("SELECT count(*) FROM pg_policies") == before, "idempotent"
    finally:
        await conn.close()


async def test_plain_postgresql_is_left_as_it_was(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        state = await supabase_rls.state(conn)
        assert not state.roles and state.unprotected == supabase_rls.RLS_TABLES
        assert await row_security.tables(conn) == sorted(supabase_rls.RLS_TABLES)
        assert await conn.fetchval("SELECT count(*) FROM pg_policies") == 0
        assert await conn.fetchval("SELECT to_regprocedure('phonefleet_rls_teams()')") is None
    finally:
        await conn.close()
    done = await asyncio.to_thread(_server_cli, dsn, "supabase", "rls")
    assert done.returncode == 1 and "no anon and authenticated roles" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _server_cli(dsn: str, *args: str) -> "subprocess.CompletedProcess[str]":
    env = {**os.environ, "DATABASE_URL": dsn}
    return subprocess.run([sys.executable, "-m", "phonefleet.server.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def rolesless_root(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL of its own without Supabase's roles (yet)."""
    embedded, uri = _cluster(tmp_path / "pg", roles=False)
    try:
        yield uri
    finally:
        embedded.stop()


async def test_roles_made_after_the_migrations_are_caught_up_at_start_and_by_the_cli(
        rolesless_root: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dsn = await _owned_database(rolesless_root)
    owner = _as(dsn, OWNER)
    conn = await asyncpg.connect(owner)
    try:
        assert supabase_rls.RLS_MIGRATION in await migrate(conn)
    finally:
        await conn.close()
    # The database moves into a Supabase project: its roles appear, and with them Supabase's grants.
    await _run(rolesless_root, SUPABASE_ROLES)
    await _run(dsn, SUPABASE_GRANTS.format(owner=OWNER) + "GRANT ALL ON ALL TABLES IN SCHEMA public TO anon, "
               "authenticated, service_role;")
    assert await _read(dsn, "anon", "SELECT name FROM people") == [], "no people yet, but anon may look"
    with caplog.at_level(logging.WARNING, logger="phonefleet.server.supabase_rls"):
        srv = await start_server(conftest.test_settings(owner, tmp_path / "srv"))
        try:
            assert (await srv.request("GET", "/api/jobs"))[0] == 200
        finally:
            await srv.close()
    assert any("applying it" in r.getMessage() for r in caplog.records)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _read(dsn, "anon", "SELECT name FROM people")
    done = await asyncio.to_thread(_server_cli, owner, "supabase", "rls")
    assert done.returncode == 0, done.stderr
    assert f"row level security on all {len(supabase_rls.RLS_TABLES)} phonefleet tables" in done.stdout


async def test_after_supabase_db_push_the_server_closes_its_own_history_table(
        supabase_root: str, supabase_cli: str, tmp_path: Path) -> None:
    """``supabase db push`` runs 0017 where the roles exist, but ``schema_migrations`` is made by the server's
    first start, after it (and Supabase grants the roles everything on it): that start gives it RLS too."""
    dsn = await _owned_database(supabase_root)
    owner = _as(dsn, OWNER)
    export_migrations(tmp_path / "supabase" / "migrations")
    await asyncio.to_thread(_push, supabase_cli, tmp_path, owner, "db", "push")
    conn = await asyncpg.connect(owner)
    try:
        assert (await supabase_rls.state(conn)).unprotected == ()
    finally:
        await conn.close()
    srv = await start_server(conftest.test_settings(owner, tmp_path / "srv"))
    try:
        assert (await srv.request("GET", "/api/jobs"))[0] == 200
    finally:
        await srv.close()
    conn = await asyncpg.connect(owner)
    try:
        assert await migrate(conn) == [], "the versions the CLI applied, adopted"
        state = await supabase_rls.state(conn)
    finally:
        await conn.close()
    assert state.roles and state.unprotected == ()
    for sql in ("SELECT * FROM schema_migrations", "DELETE FROM schema_migrations"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _read(dsn, "anon", sql)
    await drop_database(supabase_root, dsn.rsplit("/", 1)[1].split("?")[0])
