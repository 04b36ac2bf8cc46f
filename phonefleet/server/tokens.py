"""Issuing, rotating and revoking tokens: the transactions both the REST API and the CLI run.

A revocation sends its bus message (``pg_notify``) in the same transaction, so every server node
hears of it exactly when it takes effect, whichever process made it: a node, or the CLI.
"""


import asyncpg
from pydantic import ValidationError

from phonefleet.protocol.models import AdminTokenCreate, AgentCreate
from phonefleet.server import audit, bus
from phonefleet.server.auth import ADMIN_PREFIX, AGENT_PREFIX, ENV_ADMIN, hash_token, new_token
from phonefleet.server.bus_messages import Revoked
from phonefleet.server.errors import Conflict, Invalid, NotFound
from phonefleet.server.store import DEFAULT_TEAM, Conn, Row
from phonefleet.server.store import admin_tokens as admin_tokens_store
from phonefleet.server.store import agents as agents_store


def agent_revoked(agent_id: int) -> Revoked:
    return Revoked(agent_id=agent_id)


def admin_revoked(token_id: int) -> Revoked:
    return Revoked(admin_token_id=token_id)


async def add_agent(conn: Conn, name: str, team_id: int = DEFAULT_TEAM) -> tuple[int, str]:
    """Register an agent in a team: (its id, its token, shown once: only the hash is kept). The one way an
    agent is made, whether by REST, by ``phonefleet-server agents add`` or by a test."""
    try:
        name = AgentCreate(name=name).name
    except ValidationError as exc:
        raise Invalid.from_validation(exc) from None
    token = new_token(AGENT_PREFIX)
    async with conn.transaction():
        try:
            agent_id = await agents_store.create(conn, name, hash_token(token), team_id)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"an agent named {name!r} exists") from None
        await audit.record(conn, "agent.create", "agent", agent_id, after={"name": name})
    return agent_id, token


async def agent_id_by_name(conn: Conn, name: str) -> int:
    agent_id = await agents_store.id_by_name(conn, name)
    if agent_id is None:
        raise NotFound(f"no agent named {name!r}")
    return agent_id


async def _replace_agent_token(conn: Conn, agent_id: int, token: str | None, node: str) -> None:
    async with conn.transaction():
        if not await agents_store.replace_token(conn, agent_id, hash_token(token) if token else None):
            raise NotFound(f"agent {agent_id} not found")
        await audit.record(conn, "agent.token.rotate" if token else "agent.token.revoke", "agent", agent_id,
                           before={"token": "the old one"}, after={"token": "a new one" if token else None})
        await bus.notify(conn, agent_revoked(agent_id), node)


async def revoke_agent(conn: Conn, agent_id: int, *, node: str) -> None:
    """The agent's token stops working; its sockets drop on every node and it is retired as gone."""
    await _replace_agent_token(conn, agent_id, None, node)


async def rotate_agent(conn: Conn, agent_id: int, *, node: str) -> str:
    """A new token replaces the old one (revoked as above); returns the new token, shown once."""
    token = new_token(AGENT_PREFIX)
    await _replace_agent_token(conn, agent_id, token, node)
    return token


def admin_name(name: str) -> str:
    """A valid admin token name (the same rule as the REST body's), or a 422 naming ``name``."""
    try:
        return AdminTokenCreate(name=name).name
    except ValidationError as exc:
        raise Invalid.from_validation(exc) from None


async def add_admin(conn: Conn, name: str) -> tuple[Row, str]:
    """A new named admin token; returns its row and the token, shown once."""
    name = admin_name(name)
    if name == ENV_ADMIN:
        raise Conflict(f"{ENV_ADMIN!r} is reserved for the environment's PHONEFLEET_ADMIN_TOKEN")
    token = new_token(ADMIN_PREFIX)
    async with conn.transaction():
        row = await admin_tokens_store.add(conn, name, hash_token(token))
        if row is None:
            raise Conflict(f"an admin token named {name!r} exists")
        await audit.record(conn, "admin_token.create", "admin_token", row["id"], after={"name": name})
    return row, token


async def revoke_admin(conn: Conn, name: str, *, node: str) -> int:
    """The named admin token stops working; its dashboard sockets drop on every node. Returns its id."""
    if name == ENV_ADMIN:
        raise Conflict(f"{ENV_ADMIN!r} is the servers' PHONEFLEET_ADMIN_TOKEN and cannot be revoked here: "
                       "change or unset that variable where the servers run, and restart them")
    async with conn.transaction():
        token_id = await admin_tokens_store.delete(conn, name)
        if token_id is None:
            raise NotFound(f"no admin token named {name!r}")
        await audit.record(conn, "admin_token.revoke", "admin_token", token_id, before={"name": name})
        await bus.notify(conn, admin_revoked(token_id), node)
    return token_id
