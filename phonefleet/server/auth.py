"""Tokens: admin tokens for people and automation, one token per agent; only hashes are stored."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from phonefleet.server.store import Conn
from phonefleet.server.store import agents as agents_store

ADMIN_PREFIX = "pfadm_"
AGENT_PREFIX = "pfagt_"


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


class Authenticator:
    """Resolves a bearer token to an admin or an agent."""

    def __init__(self, env_admin_token: str | None) -> None:
        self._env_admin_hash = hash_token(env_admin_token) if env_admin_token else None

    async def resolve(self, conn: Conn, token: str | None) -> Principal | None:
        if not token or len(token) > 200:
            return None
        digest = hash_token(token)
        if self._env_admin_hash and hmac.compare_digest(digest, self._env_admin_hash):
            return Principal("admin")
        if token.startswith(AGENT_PREFIX):
            row = await agents_store.by_token_hash(conn, digest)
            if row is not None:
                return Principal("agent", agent_id=row["id"], agent_name=row["name"])
            return None
        if await agents_store.admin_token_exists(conn, digest):
            return Principal("admin")
        return None


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
