"""People: accounts with a role, sign-in and sign-out, passwords and personal tokens. The transactions both the
REST API and ``phonefleet-server users`` run.

A change that ends access (sign-out, disable, a role change, a revoked token, a new password) sends its bus
message in the same transaction, so every node re-checks that person's dashboard sockets when it takes effect.
"""

import asyncio
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import ValidationError

from phonefleet.protocol.enums import Role
from phonefleet.protocol.people import PASSWORD_MIN, PersonalTokenCreate, PersonCreate, PersonPatch
from phonefleet.protocol.teams import DEFAULT_TEAM_NAME
from phonefleet.server import audit, bus, teams
from phonefleet.server.auth import PERSON_PREFIX, SESSION_PREFIX, hash_token, new_token
from phonefleet.server.bus_messages import Revoked
from phonefleet.server.errors import Conflict, Forbidden, Invalid, NotFound, TooManyAttempts, Unauthorized
from phonefleet.server.store import Conn
from phonefleet.server.store import people as people_store
from phonefleet.server.store.records import PersonRecord, PersonTokenRecord

_hasher = PasswordHasher()  # argon2id with the library's current recommended cost
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
"""Checked against when the name is unknown, so a wrong name costs as long as a wrong password."""


@dataclass(frozen=True)
class SignInPolicy:
    """How many failed sign-ins a window allows, per account and per address, and how long a session lasts
    unused."""

    account_failures: int = 5
    address_failures: int = 30
    window_sec: float = 900.0
    session_ttl_sec: float = 43_200.0


@dataclass(frozen=True)
class NewSession:
    person: PersonRecord
    session_id: int
    cookie: str
    """The session's secret, for the cookie only; the database keeps its hash."""
    csrf_token: str


def person_revoked(person_id: int) -> Revoked:
    return Revoked(person_id=person_id)


def new_password() -> str:
    """A one-time password, shown once: 128 random bits, easy to copy."""
    return secrets.token_urlsafe(16)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def check_password(password_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def _valid(model: type[PersonCreate] | type[PersonalTokenCreate], **fields: object) -> str:
    """The name, once the fields are valid (422 naming the first bad one)."""
    try:
        return model.model_validate(fields).name
    except ValidationError as exc:
        raise Invalid.from_validation(exc) from None


async def person_named(conn: Conn, name: str) -> PersonRecord:
    person = await people_store.by_name(conn, name)
    if person is None:
        raise NotFound(f"no person named {name!r}")
    return person


async def add_person(conn: Conn, name: str, role: Role, team_names: Sequence[str] = (DEFAULT_TEAM_NAME,)
                     ) -> tuple[PersonRecord, str]:
    """A new person, a member of the teams named (422 naming ``teams`` for an unknown one), with a one-time
    password (returned, shown once: only its hash is kept)."""
    name = _valid(PersonCreate, name=name, role=role, teams=list(team_names))
    password = new_password()
    password_hash = await hash_password(password)
    async with conn.transaction():
        team_ids = await teams.team_ids_named(conn, team_names)
        person = await people_store.add(conn, name, password_hash, str(role), team_ids)
        if person is None:
            raise Conflict(f"a person named {name!r} exists")
        await audit.record(conn, "person.create", "person", person.id,
                           after={"name": name, "role": str(role), "team_ids": sorted(team_ids)})
    return person, password


async def set_email(conn: Conn, name: str, email: str | None) -> PersonRecord:
    """The email a person's first Supabase sign-in is matched by (None: none): that Supabase user is this person
    from then on, with this person's role."""
    if email is not None and (len(email) > 320 or not re.fullmatch(r"[^@\s]+@[^@\s]+", email)):
        raise Invalid.field("email", "an email address (name@domain)")
    try:
        async with conn.transaction():
            person = await people_store.set_email(conn, name, email)
            if person is None:
                raise NotFound(f"no person named {name!r}")
            await audit.record(conn, "person.update", "person", person.id, after={"email": email})
    except asyncpg.UniqueViolationError:
        raise Conflict(f"another person has the email {email!r}") from None
    return person


async def update_person(conn: Conn, name: str, patch: PersonPatch, *, node: str) -> PersonRecord:
    """Change a role or the teams, disable or enable. Disabling ends every session and personal token of theirs;
    the last enabled admin can be neither demoted nor disabled (nobody could manage people then)."""
    async with conn.transaction():
        before = await people_store.by_name(conn, name)
        if before is None:
            raise NotFound(f"no person named {name!r}")
        leaves_admins = before.role == Role.admin and not before.disabled and (
            (patch.role is not None and patch.role != Role.admin) or patch.disabled is True)
        if leaves_admins:
            await conn.execute("LOCK TABLE people IN SHARE ROW EXCLUSIVE MODE")  # two demotions at once: one wins
            if await people_store.count_admins(conn) <= 1:
                raise Conflict(f"{name!r} is the last enabled admin: make another admin first")
        person = await people_store.update(conn, name, role=patch.role, disabled=patch.disabled)
        assert person is not None
        await audit.record_change(conn, "person.update", "person", person.id,
                                  before={"role": before.role, "disabled": before.disabled},
                                  after={"role": person.role, "disabled": person.disabled})
        if patch.teams is not None:
            await teams.set_teams(conn, person.id, await teams.team_ids_named(conn, patch.teams), before.team_ids)
            person = await people_store.by_name(conn, name)
            assert person is not None
        if patch.disabled:
            await people_store.delete_sessions_of(conn, person.id)
            await people_store.delete_tokens_of(conn, person.id)
        await bus.notify(conn, person_revoked(person.id), node)
    return person


async def sign_in(conn: Conn, name: str, password: str, address: str, policy: SignInPolicy) -> NewSession:
    """A new session for the right name and password, unless this account or address failed too often within
    the window (429: counted in the database, so the limit holds across every node)."""
    keys = {"account": f"name:{name}", "address": f"addr:{address}"}
    counts = await people_store.failures(conn, list(keys.values()), policy.window_sec)
    if counts.get(keys["account"], 0) >= policy.account_failures or \
            counts.get(keys["address"], 0) >= policy.address_failures:
        minutes = max(1, round(policy.window_sec / 60))
        raise TooManyAttempts(f"too many failed sign-ins: try again within {minutes} minutes")
    person = await people_store.credentials(conn, name)
    right = await check_password(person.password_hash if person else _DUMMY_HASH, password)
    if person is None or not right:
        await people_store.count_failure(conn, list(keys.values()), policy.window_sec)
        raise Unauthorized("wrong name or password")
    if person.disabled:
        raise Forbidden(f"{name!r} is disabled")
    await people_store.clear_failures(conn, keys["account"])
    cookie, csrf = new_token(SESSION_PREFIX), secrets.token_urlsafe(32)
    session_id = await people_store.add_session(conn, person.id, hash_token(cookie), csrf, policy.session_ttl_sec)
    await people_store.delete_expired_sessions(conn)
    return NewSession(person, session_id, cookie, csrf)


async def sign_out(conn: Conn, person_id: int, session_id: int, *, node: str) -> None:
    """The session ends now, its dashboard sockets drop on every node."""
    async with conn.transaction():
        await people_store.delete_session(conn, session_id)
        await bus.notify(conn, person_revoked(person_id), node)


async def change_password(conn: Conn, person_id: int, current: str, new: str, *, keep_session: int | None,
                          node: str) -> None:
    """The person's own password, given the current one; their other sessions end (a stolen one too)."""
    if len(new) < PASSWORD_MIN:
        raise Invalid.field("new_password", f"at least {PASSWORD_MIN} characters")
    person = await people_store.credentials_by_id(conn, person_id)
    if person is None or not await check_password(person.password_hash, current):
        raise Invalid.field("current_password", "wrong password")
    new_hash = await hash_password(new)
    async with conn.transaction():
        await people_store.set_password(conn, person_id, new_hash)
        await audit.record(conn, "person.password.change", "person", person_id)
        await conn.execute("DELETE FROM person_sessions WHERE person_id = $1 AND id IS DISTINCT FROM $2",
                           person_id, keep_session)
        await bus.notify(conn, person_revoked(person_id), node)


async def reset_password(conn: Conn, name: str, *, node: str) -> str:
    """A new one-time password (for the CLI, when a person forgot theirs); their sessions end."""
    person = await person_named(conn, name)
    password = new_password()
    new_hash = await hash_password(password)
    async with conn.transaction():
        await people_store.set_password(conn, person.id, new_hash)
        await people_store.delete_sessions_of(conn, person.id)
        await audit.record(conn, "person.password.reset", "person", person.id)
        await bus.notify(conn, person_revoked(person.id), node)
    return password


async def add_token(conn: Conn, person_id: int, name: str) -> tuple[PersonTokenRecord, str]:
    """A personal API token (its secret returned once); it acts with its owner's role as it stands."""
    name = _valid(PersonalTokenCreate, name=name)
    secret = new_token(PERSON_PREFIX)
    async with conn.transaction():
        token = await people_store.add_token(conn, person_id, name, hash_token(secret))
        if token is None:
            raise Conflict(f"you have a token named {name!r}")
        await audit.record(conn, "personal_token.create", "personal_token", token.id, after={"name": name})
    return token, secret


async def revoke_token(conn: Conn, person_id: int, token_id: int, *, node: str) -> None:
    async with conn.transaction():
        if not await people_store.delete_token(conn, person_id, token_id):
            raise NotFound(f"you have no token {token_id}")
        await audit.record(conn, "personal_token.revoke", "personal_token", token_id)
        await bus.notify(conn, person_revoked(person_id), node)


def same_secret(given: str | None, expected: str | None) -> bool:
    return given is not None and expected is not None and hmac.compare_digest(given.encode(), expected.encode())
