"""The audit trail: who changed what, appended in the transaction that makes the change.

Who is acting travels with the work as a context variable, set once where a request enters (a REST
handler, an agent's event, a dashboard's socket event, a CLI command) by ``acting``; services call
``record`` inside their transaction, so a change and its record commit, or roll back, together. Work
started by the server itself (an idle timeout, a shutdown) acts as ``SYSTEM``.
"""

import contextlib
import getpass
import socket
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic_core import to_jsonable_python

from phonefleet.protocol.audit import ActorKind, AuditEvent, AuditPage, Via
from phonefleet.server.auth import ENV_ADMIN, Principal
from phonefleet.server.store import Conn
from phonefleet.server.store import audit as audit_store
from phonefleet.server.store.audit import AuditFilter
from phonefleet.server.store.records import AuditRecord


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    id: str | None
    name: str


SYSTEM = Actor("system", None, "server")


def actor_of(principal: Principal) -> Actor:
    """The one mapping from who a request is to who the trail names: a person (by session or personal token), a
    shared admin token, or an agent."""
    if principal.person_id is not None:
        return Actor("person", str(principal.person_id), principal.person_name or f"person {principal.person_id}")
    if principal.kind == "agent":
        return Actor("agent", str(principal.agent_id), principal.agent_name or f"agent {principal.agent_id}")
    if principal.admin_token_id is None:
        return Actor("token", None, principal.admin_name or ENV_ADMIN)
    return Actor("token", str(principal.admin_token_id), principal.admin_name or f"token {principal.admin_token_id}")


def cli_actor() -> Actor:
    """The server's CLI acts on the database directly: the trail names the OS user and host that ran it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = "unknown"
    return Actor("cli", None, f"{user}@{socket.gethostname()}")


@dataclass(frozen=True, slots=True)
class Caller:
    actor: Actor
    via: Via
    address: str | None = None


_SERVER = Caller(SYSTEM, "system")
_CALLER: ContextVar[Caller | None] = ContextVar("audit_caller", default=None)


@contextlib.contextmanager
def acting(actor: Actor, via: Via, address: str | None = None) -> Iterator[Caller]:
    """Within this block (and the tasks it starts) changes are recorded as made by ``actor``."""
    caller = Caller(actor, via, address)
    token = _CALLER.set(caller)
    try:
        yield caller
    finally:
        _CALLER.reset(token)


def current() -> Caller:
    return _CALLER.get() or _SERVER


def _plain(value: Any) -> Any:
    return to_jsonable_python(value)


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields whose values differ (a field on one side only counts, as null on the other)."""
    keys = [k for k in dict.fromkeys([*before, *after]) if _plain(before.get(k)) != _plain(after.get(k))]
    return ({k: _plain(before.get(k)) for k in keys}, {k: _plain(after.get(k)) for k in keys})


async def record(conn: Conn, action: str, object_kind: str, object_id: int | str | None, *,
                 before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
                 team_id: int | None = None) -> int:
    """Append one event for the current caller, in ``conn``'s transaction; returns its id."""
    caller = current()
    return await audit_store.add(conn, audit_store.NewAuditEvent(
        actor_kind=caller.actor.kind, actor_id=caller.actor.id, actor_name=caller.actor.name, action=action,
        object_kind=object_kind, object_id=None if object_id is None else str(object_id),
        before=None if before is None else _plain(dict(before)), after=None if after is None else _plain(dict(after)),
        via=caller.via, address=caller.address, team_id=team_id,
    ))


async def record_change(conn: Conn, action: str, object_kind: str, object_id: int | str | None, *,
                        before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Record the fields that changed between ``before`` and ``after``; nothing when none did."""
    was, now = changed(before, after)
    if not was:
        return False
    await record(conn, action, object_kind, object_id, before=was, after=now)
    return True


def event_model(row: AuditRecord) -> AuditEvent:
    fields = dict(row.items())
    fields["actor"] = {"kind": fields.pop("actor_kind"), "id": fields.pop("actor_id"), "name": fields.pop("actor_name")}
    return AuditEvent.model_validate(fields)


class AuditTrail:
    """Reading the trail (``GET /api/audit``); nothing here, or anywhere in the API, edits or deletes it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def page(self, f: AuditFilter, *, before: int | None, limit: int) -> AuditPage:
        async with self.pool.acquire() as conn:
            rows = await audit_store.page(conn, f, before=before, limit=limit + 1)
        more = len(rows) > limit
        items = [event_model(r) for r in rows[:limit]]
        return AuditPage(items=items, next_before=items[-1].id if more and items else None)
