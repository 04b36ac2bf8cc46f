"""Tokens: admin tokens for people and automation, one token per agent; only hashes are stored. Where
Supabase Auth is configured, a Supabase-issued JWT is verified too (``supabase_auth``)."""

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

from phonefleet.server.store import Conn
from phonefleet.server.store import admin_tokens as admin_tokens_store
from phonefleet.server.store import agents as agents_store
from phonefleet.server.supabase_auth import JwtRejected, SupabaseClaims, SupabaseVerifier, looks_like_jwt

log = logging.getLogger(__name__)

ADMIN_PREFIX = "pfadm_"
AGENT_PREFIX = "pfagt_"
ENV_ADMIN = "env"
"""The name under which the environment's ``PHONEFLEET_ADMIN_TOKEN`` is listed; reserved, not revocable here."""


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens carry 256 random bits, so a plain SHA-256 is enough (no slow KDF needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["admin", "agent"]
    agent_id: int | None = None
    agent_name: str | None = None
    admin_token_id: int | None = None
    """The stored admin token used (None for the environment's), so its sockets can be found on revoke."""
    admin_name: str | None = None
    token_hash: str | None = field(default=None, repr=False)
    """Kept in memory only, so a node can check that a socket's token is still the agent's."""


async def person_for_claims(conn: Conn, claims: SupabaseClaims, first_role: str) -> Principal:
    """SEAM, to be glued when people land (migration 0012): the person whose Supabase ``sub`` these verified
    claims carry (or, on a first sign-in, whose email they verify), created with ``first_role`` if none
    is; their role and teams come from phonefleet's own tables, never from the token. Until phonefleet has
    people, a verified Supabase user is nobody here: refused with a 401 (never made an admin)."""
    del conn, first_role
    raise JwtRejected("no_person", f"no phonefleet person for Supabase user {claims.sub}")


class Authenticator:
    """Resolves a bearer token to an admin or an agent (or, with Supabase Auth configured, a Supabase
    user's JWT to their person); a refused JWT raises ``JwtRejected`` with its reason."""

    def __init__(self, env_admin_token: str | None, supabase: SupabaseVerifier | None = None,
                 supabase_first_role: str = "viewer") -> None:
        self._env_admin_hash = hash_token(env_admin_token) if env_admin_token else None
        self.supabase = supabase
        self.supabase_first_role = supabase_first_role

    @property
    def has_env_admin(self) -> bool:
        return self._env_admin_hash is not None

    async def resolve(self, conn: Conn, token: str | None) -> Principal | None:
        if not token:
            return None
        digest = hash_token(token)
        if self._env_admin_hash and hmac.compare_digest(digest, self._env_admin_hash):
            return Principal("admin", admin_name=ENV_ADMIN)  # first: an environment token may have dots too
        if self.supabase is not None and looks_like_jwt(token):
            claims = await self.supabase.verify(token)
            return await person_for_claims(conn, claims, self.supabase_first_role)
        if len(token) > 200:
            return None
        if token.startswith(AGENT_PREFIX):
            row = await agents_store.by_token_hash(conn, digest)
            if row is not None:
                return Principal("agent", agent_id=row.id, agent_name=row.name, token_hash=digest)
            return None
        admin = await admin_tokens_store.by_hash(conn, digest)
        if admin is None:
            return None
        await admin_tokens_store.mark_used(conn, admin)
        return Principal("admin", admin_token_id=admin.id, admin_name=admin.name, token_hash=digest)


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


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
