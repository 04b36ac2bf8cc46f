"""Tokens: admin tokens for people and automation, one token per agent; only hashes are stored."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

from phonefleet.server.store import Conn
from phonefleet.server.store import admin_tokens as admin_tokens_store
from phonefleet.server.store import agents as agents_store

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


class Authenticator:
    """Resolves a bearer token to an admin or an agent."""

    def __init__(self, env_admin_token: str | None) -> None:
        self._env_admin_hash = hash_token(env_admin_token) if env_admin_token else None

    @property
    def has_env_admin(self) -> bool:
        return self._env_admin_hash is not None

    async def resolve(self, conn: Conn, token: str | None) -> Principal | None:
        if not token or len(token) > 200:
            return None
        digest = hash_token(token)
        if self._env_admin_hash and hmac.compare_digest(digest, self._env_admin_hash):
            return Principal("admin", admin_name=ENV_ADMIN)
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
        async with self.pool.acquire() as conn:
            return await self.authenticator.resolve(conn, token)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
