"""SQL of people, their sessions and personal tokens, and sign-in attempt counts. Only hashes of secrets are
stored (argon2id for passwords, SHA-256 for the 256-bit session and token secrets)."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from phonefleet.server.store import DEFAULT_TEAM, Conn
from phonefleet.server.store.records import PersonCredentials, PersonRecord, PersonTokenRecord, SessionRecord

BASE_COLUMNS = "id, name, role, disabled_at IS NOT NULL AS disabled, created_at"
COLUMNS = (BASE_COLUMNS + ", ARRAY(SELECT m.team_id FROM team_members m WHERE m.person_id = people.id "
           "ORDER BY m.team_id) AS team_ids, ARRAY(SELECT t.name FROM team_members m JOIN teams t ON t.id = m.team_id "
           "WHERE m.person_id = people.id ORDER BY m.team_id) AS teams")
DEFAULT_TEAMS = (DEFAULT_TEAM,)
"""Where a new person goes when no team is named."""
TEAMS_OF_P = "ARRAY(SELECT m.team_id FROM team_members m WHERE m.person_id = p.id ORDER BY m.team_id) AS team_ids"
"""SQL (over ``people p``): the ids of the person's teams."""
SESSION_COLUMNS = ("s.id, p.id AS person_id, p.name AS person_name, p.role, s.csrf_token, s.last_used_at, "
                   + TEAMS_OF_P)
TOKEN_COLUMNS = "id, name, created_at, last_used_at"

TOUCH_EVERY_SEC = 60
"""A session's expiry and a token's ``last_used_at`` are written at most this often: not on every request."""


# ------------------------------------------------------------------------------------------------ people

_WITH_TEAMS = """m AS (INSERT INTO team_members (team_id, person_id) SELECT t, p.id FROM p, unnest($%d::bigint[]) t
                          RETURNING team_id)
    SELECT p.*, ARRAY(SELECT team_id FROM m ORDER BY team_id) AS team_ids,
           ARRAY(SELECT t.name FROM m JOIN teams t ON t.id = m.team_id ORDER BY m.team_id) AS teams FROM p"""
"""The end of an insert of a person (CTE ``p``) that makes them a member of the teams in parameter %d."""


async def add(conn: Conn, name: str, password_hash: str, role: str,
              team_ids: Sequence[int] = DEFAULT_TEAMS) -> PersonRecord | None:
    """The new person, a member of ``team_ids``, or None when the name is taken (the key decides, across
    processes)."""
    return await conn.fetchrow(
        f"""WITH p AS (INSERT INTO people (name, password_hash, role) VALUES ($1, $2, $3)
                       ON CONFLICT (name) DO NOTHING RETURNING {BASE_COLUMNS}),
            {_WITH_TEAMS % 4}""",
        name, password_hash, role, list(team_ids), record_class=PersonRecord)


async def by_supabase(conn: Conn, sub: str, email: str | None) -> PersonRecord | None:
    """The person of a Supabase user: by their user id, or else (first sign-in) the one an admin gave their email,
    who is linked to that user id from now on."""
    row: PersonRecord | None = await conn.fetchrow(f"SELECT {COLUMNS} FROM people WHERE supabase_sub = $1", sub,
                                                   record_class=PersonRecord)
    if row is None and email:
        row = await conn.fetchrow(
            f"""UPDATE people SET supabase_sub = $1 WHERE lower(email) = lower($2) AND supabase_sub IS NULL
                RETURNING {COLUMNS}""", sub, email, record_class=PersonRecord)
    return row


async def add_from_supabase(conn: Conn, name: str, password_hash: str, role: str, *, sub: str,
                            email: str | None, team_ids: Sequence[int] = DEFAULT_TEAMS) -> PersonRecord | None:
    """A person for a Supabase user's first sign-in, a member of ``team_ids``, or None when the name, the user
    id or the email is taken (another node made them a moment ago, or the name belongs to someone else)."""
    return await conn.fetchrow(
        f"""WITH p AS (INSERT INTO people (name, password_hash, role, supabase_sub, email)
                       VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {BASE_COLUMNS}),
            {_WITH_TEAMS % 6}""",
        name, password_hash, role, sub, email, list(team_ids), record_class=PersonRecord)


async def set_email(conn: Conn, name: str, email: str | None) -> PersonRecord | None:
    """The email a person's Supabase sign-in is matched by (None: none); None when there is no such person."""
    return await conn.fetchrow(f"UPDATE people SET email = $2 WHERE name = $1 RETURNING {COLUMNS}", name, email,
                               record_class=PersonRecord)


async def by_name(conn: Conn, name: str) -> PersonRecord | None:
    return await conn.fetchrow(f"SELECT {COLUMNS} FROM people WHERE name = $1", name, record_class=PersonRecord)


async def credentials(conn: Conn, name: str) -> PersonCredentials | None:
    return await conn.fetchrow(f"SELECT {COLUMNS}, password_hash FROM people WHERE name = $1", name,
                               record_class=PersonCredentials)


async def credentials_by_id(conn: Conn, person_id: int) -> PersonCredentials | None:
    return await conn.fetchrow(f"SELECT {COLUMNS}, password_hash FROM people WHERE id = $1", person_id,
                               record_class=PersonCredentials)


async def list_all(conn: Conn) -> list[PersonRecord]:
    return await conn.fetch(f"SELECT {COLUMNS} FROM people ORDER BY name", record_class=PersonRecord)


async def count_admins(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM people WHERE role = 'admin' AND disabled_at IS NULL"))


async def update(conn: Conn, name: str, *, role: str | None, disabled: bool | None) -> PersonRecord | None:
    """Set the given fields (None: unchanged); the person as they now stand, or None when no one has that name."""
    return await conn.fetchrow(
        f"""UPDATE people SET role = coalesce($2, role),
                              disabled_at = CASE WHEN $3::boolean IS NULL THEN disabled_at
                                                 WHEN $3 THEN coalesce(disabled_at, now()) ELSE NULL END
            WHERE name = $1 RETURNING {COLUMNS}""",
        name, role, disabled, record_class=PersonRecord)


async def set_password(conn: Conn, person_id: int, password_hash: str) -> None:
    await conn.execute("UPDATE people SET password_hash = $2, password_changed_at = now() WHERE id = $1",
                       person_id, password_hash)


# ---------------------------------------------------------------------------------------------- sessions

async def add_session(conn: Conn, person_id: int, token_hash: str, csrf_token: str, ttl_sec: float) -> int:
    return int(await conn.fetchval(
        """INSERT INTO person_sessions (person_id, token_hash, csrf_token, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING id""",
        person_id, token_hash, csrf_token, ttl_sec))


async def session_by_hash(conn: Conn, token_hash: str) -> SessionRecord | None:
    """A session that has not expired, of a person not disabled."""
    return await conn.fetchrow(
        f"""SELECT {SESSION_COLUMNS} FROM person_sessions s JOIN people p ON p.id = s.person_id
            WHERE s.token_hash = $1 AND s.expires_at > now() AND p.disabled_at IS NULL""",
        token_hash, record_class=SessionRecord)


async def touch_session(conn: Conn, session: SessionRecord, ttl_sec: float) -> None:
    """Push the session's expiry on from now (sliding), unless that was done within the last minute."""
    if _due(session.last_used_at):
        await conn.execute("""UPDATE person_sessions SET last_used_at = now(),
                                     expires_at = now() + make_interval(secs => $2) WHERE id = $1""",
                           session.id, ttl_sec)


async def delete_session(conn: Conn, session_id: int) -> bool:
    return await conn.fetchval("DELETE FROM person_sessions WHERE id = $1 RETURNING id", session_id) is not None


async def delete_sessions_of(conn: Conn, person_id: int) -> None:
    await conn.execute("DELETE FROM person_sessions WHERE person_id = $1", person_id)


async def delete_expired_sessions(conn: Conn) -> None:
    await conn.execute("DELETE FROM person_sessions WHERE expires_at <= now()")


# ------------------------------------------------------------------------------------------------ tokens

async def add_token(conn: Conn, person_id: int, name: str, token_hash: str) -> PersonTokenRecord | None:
    """The new token, or None when its owner already has one of that name."""
    return await conn.fetchrow(
        f"""INSERT INTO person_tokens (person_id, name, token_hash) VALUES ($1, $2, $3)
            ON CONFLICT (person_id, name) DO NOTHING RETURNING {TOKEN_COLUMNS}""",
        person_id, name, token_hash, record_class=PersonTokenRecord)


async def token_by_hash(conn: Conn, token_hash: str) -> SessionRecord | None:
    """A personal token of a person not disabled (as a session without a CSRF token)."""
    return await conn.fetchrow(
        f"""SELECT t.id, p.id AS person_id, p.name AS person_name, p.role, NULL::text AS csrf_token, t.last_used_at,
                  {TEAMS_OF_P}
           FROM person_tokens t JOIN people p ON p.id = t.person_id
           WHERE t.token_hash = $1 AND p.disabled_at IS NULL""",
        token_hash, record_class=SessionRecord)


async def mark_token_used(conn: Conn, token: SessionRecord) -> None:
    if _due(token.last_used_at):
        await conn.execute("UPDATE person_tokens SET last_used_at = now() WHERE id = $1", token.id)


async def tokens_of(conn: Conn, person_id: int) -> list[PersonTokenRecord]:
    return await conn.fetch(f"SELECT {TOKEN_COLUMNS} FROM person_tokens WHERE person_id = $1 ORDER BY name",
                            person_id, record_class=PersonTokenRecord)


async def delete_token(conn: Conn, person_id: int, token_id: int) -> bool:
    return await conn.fetchval("DELETE FROM person_tokens WHERE id = $1 AND person_id = $2 RETURNING id",
                               token_id, person_id) is not None


async def delete_tokens_of(conn: Conn, person_id: int) -> None:
    await conn.execute("DELETE FROM person_tokens WHERE person_id = $1", person_id)


async def alive(conn: Conn, session_ids: Sequence[int], token_ids: Sequence[int]
                ) -> tuple[dict[int, str], dict[int, str]]:
    """Which of these sessions and personal tokens still work (not ended, owner not disabled), with the owner's
    role now."""
    sessions = await conn.fetch(
        """SELECT s.id, p.role FROM person_sessions s JOIN people p ON p.id = s.person_id
           WHERE s.id = ANY($1::bigint[]) AND s.expires_at > now() AND p.disabled_at IS NULL""", list(session_ids))
    tokens = await conn.fetch(
        """SELECT t.id, p.role FROM person_tokens t JOIN people p ON p.id = t.person_id
           WHERE t.id = ANY($1::bigint[]) AND p.disabled_at IS NULL""", list(token_ids))
    return {r["id"]: r["role"] for r in sessions}, {r["id"]: r["role"] for r in tokens}


# -------------------------------------------------------------------------------------- sign-in attempts

async def failures(conn: Conn, keys: Sequence[str], window_sec: float) -> dict[str, int]:
    """Failed sign-ins per key within the current window (keys with none are left out)."""
    rows = await conn.fetch(
        """SELECT key, failures FROM sign_in_attempts
           WHERE key = ANY($1::text[]) AND window_start > now() - make_interval(secs => $2)""",
        list(keys), window_sec)
    return {r["key"]: int(r["failures"]) for r in rows}


async def count_failure(conn: Conn, keys: Sequence[str], window_sec: float) -> None:
    """One more failure under each key; a window that has passed starts again from one."""
    await conn.execute(
        """INSERT INTO sign_in_attempts AS a (key, failures) SELECT k, 1 FROM unnest($1::text[]) AS k
           ON CONFLICT (key) DO UPDATE SET
             failures = CASE WHEN a.window_start > now() - make_interval(secs => $2) THEN a.failures + 1 ELSE 1 END,
             window_start = CASE WHEN a.window_start > now() - make_interval(secs => $2) THEN a.window_start
                                 ELSE now() END""",
        sorted(keys), window_sec)


async def clear_failures(conn: Conn, key: str) -> None:
    await conn.execute("DELETE FROM sign_in_attempts WHERE key = $1", key)


def _due(last: datetime | None) -> bool:
    return last is None or datetime.now(UTC) - last > timedelta(seconds=TOUCH_EVERY_SEC)
