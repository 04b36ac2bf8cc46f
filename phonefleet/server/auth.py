"""Who is asking: shared admin tokens (automation), one token per agent, people's personal tokens and their
dashboard sessions (a cookie); only hashes are stored. Where Supabase Auth is configured, a Supabase-issued JWT
is verified too (``supabase_auth``)."""

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

from phonefleet.protocol.enums import Role, role_at_least
from phonefleet.server.routes import Access
from phonefleet.server.store import Conn
from phonefleet.server.store import admin_tokens as admin_tokens_store
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import audit as audit_store
from phonefleet.server.store import people as people_store
from phonefleet.server.store.records import PersonRecord
from phonefleet.server.supabase_auth import JwtRejected, SupabaseClaims, SupabaseVerifier, looks_like_jwt

log = logging.getLogger(__name__)

ADMIN_PREFIX = "pfadm_"
AGENT_PREFIX = "pfagt_"
PERSON_PREFIX = "pfusr_"
SESSION_PREFIX = "pfses_"
SESSION_COOKIE = "pf_session"
ENV_ADMIN = "env"
"""The name under which the environment's ``PHONEFLEET_ADMIN_TOKEN`` is listed; reserved, not revocable here."""


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens carry 256 random bits, so a plain SHA-256 is enough (no slow KDF needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """``kind``: a shared admin token ("admin", role admin), a person by personal token or session ("person",
    their role), or an agent (no role: only the agent routes)."""

    kind: Literal["admin", "person", "agent"]
    agent_id: int | None = None
    agent_name: str | None = None
    admin_token_id: int | None = None
    """The stored admin token used (None for the environment's), so its sockets can be found on revoke."""
    admin_name: str | None = None
    token_hash: str | None = field(default=None, repr=False)
    """Kept in memory only, so a node can check that a socket's token is still the agent's."""
    role: Role | None = None
    person_id: int | None = None
    person_name: str | None = None
    session_id: int | None = None
    """The dashboard session (cookie) used, so its sockets can be found on sign-out."""
    person_token_id: int | None = None
    """The personal token used, so its sockets can be found on revoke."""
    csrf_token: str | None = field(default=None, repr=False)
    """A cookie session's CSRF token: its requests that change something must send it back."""
    team_ids: frozenset[int] = frozenset()
    """The teams whose agents, phones, jobs and schedules this principal sees and acts on: a person's teams, an
    agent's one team. Admins (admin tokens and people with the admin role) see every team (``sees_all``)."""

    @property
    def sees_all(self) -> bool:
        return self.kind == "admin" or self.role == Role.admin

    def sees(self, team_id: int) -> bool:
        """May this principal see (and, with the role for it, act on) what belongs to ``team_id``?"""
        return self.sees_all or team_id in self.team_ids

    @property
    def teams(self) -> list[int] | None:
        """The teams to limit a query to, or None for every team (an admin)."""
        return None if self.sees_all else sorted(self.team_ids)

    @property
    def name(self) -> str:
        """Who, for timelines and messages: the person, the admin token's name, or the agent."""
        return self.person_name or self.admin_name or self.agent_name or self.kind

    def allows(self, access: Access) -> bool:
        if access == "public":
            return True
        if access == "agent":
            return self.kind == "agent"
        return self.role is not None and role_at_least(self.role, Role(access))


SUPABASE_ONLY = "!supabase: no password"
"""The password hash of a person a Supabase sign-in made: no password matches it (not an argon2 hash), so they
sign in through Supabase until an admin resets their password."""


async def person_for_claims(conn: Conn, claims: SupabaseClaims, first_role: str) -> Principal:
    """The principal of a verified Supabase user's person (``supabase_person``)."""
    row = await supabase_person(conn, claims, first_role)
    return Principal("person", role=Role(row.role), person_id=row.id, person_name=row.name,
                     team_ids=frozenset(row.team_ids))


async def supabase_person(conn: Conn, claims: SupabaseClaims, first_role: str) -> PersonRecord:
    """The person of a verified Supabase user: by their user id (``sub``), or on a first sign-in the person an admin
    gave their email, or else a new person with ``first_role``. Their role and teams come from phonefleet's own
    tables, never from the token; a disabled person is refused."""
    row = await people_store.by_supabase(conn, claims.sub, claims.email)
    if row is None:
        row = await _first_supabase_sign_in(conn, claims, first_role)
    if row.disabled:
        raise JwtRejected("disabled", f"{row.name!r} is disabled in phonefleet")
    return row


def _names_for(claims: SupabaseClaims) -> list[str]:
    """Names to try for a Supabase user's new person: their email's local part (made a valid name), then with
    their user id's start, then ``supabase-<user id>``."""
    local = re.sub(r"[^A-Za-z0-9_.-]", "-", (claims.email or "").split("@")[0]).lstrip("_.-")[:80]
    names = [local, f"{local}-{claims.sub[:8]}"] if local else []
    return [*names, f"supabase-{claims.sub}"[:100]]


async def _first_supabase_sign_in(conn: Conn, claims: SupabaseClaims, first_role: str) -> PersonRecord:
    async with conn.transaction():
        for index, name in enumerate(_names_for(claims)):
            email = claims.email if index == 0 else None  # an email someone else holds must not block the user
            row = await people_store.add_from_supabase(conn, name, SUPABASE_ONLY, first_role, sub=claims.sub,
                                                        email=email)
            if row is not None:
                await audit_store.add(conn, audit_store.NewAuditEvent(
                    actor_kind="system", actor_id=None, actor_name="supabase sign-in", action="person.create",
                    object_kind="person", object_id=str(row.id), before=None,
                    after={"name": row.name, "role": row.role, "supabase_sub": claims.sub, "email": email},
                    via="system", address=None))
                return row
    row = await people_store.by_supabase(conn, claims.sub, None)  # made a moment ago by another request
    if row is None:
        raise JwtRejected("no_person", f"no phonefleet person could be made for Supabase user {claims.sub}")
    return row


class Authenticator:
    """Resolves a bearer token to an admin, a person (personal token) or an agent (or, with Supabase Auth
    configured, a Supabase user's JWT to their person), and a session cookie to its person; a refused JWT raises
    ``JwtRejected`` with its reason."""

    def __init__(self, env_admin_token: str | None, supabase: SupabaseVerifier | None = None,
                 supabase_first_role: str = "viewer", *, session_ttl_sec: float = 43_200.0) -> None:
        self._env_admin_hash = hash_token(env_admin_token) if env_admin_token else None
        self.supabase = supabase
        self.supabase_first_role = supabase_first_role
        self.session_ttl_sec = session_ttl_sec

    @property
    def has_env_admin(self) -> bool:
        return self._env_admin_hash is not None

    async def resolve(self, conn: Conn, token: str | None) -> Principal | None:
        if not token:
            return None
        digest = hash_token(token)
        if self._env_admin_hash and hmac.compare_digest(digest, self._env_admin_hash):
            # first: an environment token may have dots too
            return Principal("admin", admin_name=ENV_ADMIN, role=Role.admin)
        if self.supabase is not None and looks_like_jwt(token):
            claims = await self.supabase.verify(token)
            return await person_for_claims(conn, claims, self.supabase_first_role)
        if len(token) > 200:
            return None
        if token.startswith(AGENT_PREFIX):
            row = await agents_store.by_token_hash(conn, digest)
            if row is not None:
                return Principal("agent", agent_id=row.id, agent_name=row.name, token_hash=digest,
                                 team_ids=frozenset((row.team_id,)))
            return None
        if token.startswith(PERSON_PREFIX):
            personal = await people_store.token_by_hash(conn, digest)
            if personal is None:
                return None
            await people_store.mark_token_used(conn, personal)
            return Principal("person", role=Role(personal.role), person_id=personal.person_id,
                             person_name=personal.person_name, person_token_id=personal.id,
                             team_ids=frozenset(personal.team_ids))
        admin = await admin_tokens_store.by_hash(conn, digest)
        if admin is None:
            return None
        await admin_tokens_store.mark_used(conn, admin)
        return Principal("admin", admin_token_id=admin.id, admin_name=admin.name, token_hash=digest,
                         role=Role.admin)

    async def resolve_session(self, conn: Conn, cookie: str | None) -> Principal | None:
        """A dashboard session's cookie: the person it signed in, while it lasts (each use pushes it on)."""
        if not cookie or len(cookie) > 200 or not cookie.startswith(SESSION_PREFIX):
            return None
        session = await people_store.session_by_hash(conn, hash_token(cookie))
        if session is None:
            return None
        await people_store.touch_session(conn, session, self.session_ttl_sec)
        return Principal("person", role=Role(session.role), person_id=session.person_id,
                         person_name=session.person_name, session_id=session.id, csrf_token=session.csrf_token,
                         team_ids=frozenset(session.team_ids))


class TokenCheck:
    """Who a token is, asked of the database: what REST handlers and socket connects call."""

    def __init__(self, authenticator: Authenticator, pool: asyncpg.Pool) -> None:
        self.authenticator = authenticator
        self.pool = pool

    async def principal(self, token: str | None) -> Principal | None:
        """Who the token is, or None (a refused Supabase JWT too: sockets say only "refused")."""
        try:
            return await self.authenticate(token)
        except JwtRejected:
            return None

    async def authenticate(self, token: str | None) -> Principal | None:
        """As ``principal``, but a refused Supabase JWT raises ``JwtRejected``: a 401 that says why."""
        async with self.pool.acquire() as conn:
            try:
                return await self.authenticator.resolve(conn, token)
            except JwtRejected as exc:
                log.info("supabase token refused", extra={"reason": exc.reason})
                raise

    async def session(self, cookie: str | None) -> Principal | None:
        if not cookie:
            return None
        async with self.pool.acquire() as conn:
            return await self.authenticator.resolve_session(conn, cookie)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
