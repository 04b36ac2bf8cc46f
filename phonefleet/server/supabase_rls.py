"""Supabase Row Level Security on phonefleet's tables (migration 0017): a Supabase client signed in as a person
reads only their teams' rows, anon reads nothing, secrets are nobody's; phonefleet's own connection (the tables'
owner, RLS not forced) is unaffected.

Where Supabase's roles appear only after the migrations ran (a database moved into a Supabase project), the
tables would be open to anyone holding the project's public anon key the moment those roles got privileges, so
unlike the Realtime publication (an operator's choice) this is not left to the operator: every server start
runs the same idempotent migration again when a table lacks RLS (``ensure_at_start``), and so does
``phonefleet-server supabase rls`` (``protect``)."""

import logging
from dataclasses import dataclass

from phonefleet.server.database import MIGRATION_LOCK_KEY, migrations_dir
from phonefleet.server.store import Conn
from phonefleet.server.store import row_security as row_security_store

log = logging.getLogger(__name__)

RLS_MIGRATION = "0017_supabase_rls"
RLS_TABLES = ("admin_tokens", "agent_job_pauses", "agents", "artifacts", "assignment_steps", "assignments",
              "audit_events", "device_events", "devices", "fleet_policy", "job_events", "jobs", "people",
              "person_sessions", "person_tokens", "scheduler_state", "schedules", "schema_migrations",
              "sign_in_attempts", "team_members", "teams")
"""Every table of phonefleet's, as migration 0017 lists them (a test checks that no table is missing)."""


@dataclass(frozen=True, slots=True)
class RlsState:
    roles: bool
    """Whether Supabase's anon and authenticated roles exist (they do in every Supabase project)."""
    unprotected: tuple[str, ...]
    """phonefleet's tables without RLS (on plain PostgreSQL: all of them, and rightly so)."""


async def state(conn: Conn) -> RlsState:
    return RlsState(await row_security_store.supabase_roles_exist(conn),
                    tuple(await row_security_store.without_rls(conn, RLS_TABLES)))


async def protect(conn: Conn) -> RlsState:
    """Run migration 0017 again (a no-op without the roles), under the migrations' lock; the outcome."""
    await row_security_store.apply(conn, (migrations_dir() / f"{RLS_MIGRATION}.sql").read_text(), MIGRATION_LOCK_KEY)
    return await state(conn)


async def ensure_at_start(conn: Conn) -> RlsState:
    """Protect, at a start, tables that Supabase's roles could read unguarded (nothing to do, and no lock taken,
    where the roles do not exist or every table has RLS)."""
    current = await state(conn)
    if not current.roles or not current.unprotected:
        return current
    log.warning("supabase roles exist but phonefleet tables lack row level security: applying it",
                extra={"tables": list(current.unprotected)})
    return await protect(conn)
