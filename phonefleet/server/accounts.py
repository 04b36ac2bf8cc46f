"""This node's REST side of people: each call runs one ``people`` transaction, then applies its revocation here
at once (the bus skips the sender's own messages; other nodes hear it from the bus)."""

from collections.abc import Sequence

import asyncpg

from phonefleet.protocol.enums import Role
from phonefleet.protocol.people import Person, PersonalToken, PersonalTokenCreated, PersonCreated, PersonPatch
from phonefleet.server import people
from phonefleet.server.auth import Principal
from phonefleet.server.bus import Bus
from phonefleet.server.errors import Forbidden
from phonefleet.server.people import NewSession, SignInPolicy
from phonefleet.server.revocations import Revocations
from phonefleet.server.store import people as people_store
from phonefleet.server.store.records import PersonRecord


def person_model(row: PersonRecord) -> Person:
    return Person.model_validate(dict(row.items()))


def _person_id(principal: Principal) -> int:
    if principal.person_id is None:
        raise Forbidden("a shared admin token belongs to no person: sign in as one, or use a personal token")
    return principal.person_id


class Accounts:
    def __init__(self, pool: asyncpg.Pool, revocations: Revocations, bus: Bus, policy: SignInPolicy) -> None:
        self.pool = pool
        self.revocations = revocations
        self.bus = bus
        self.policy = policy

    async def _revoked(self, person_id: int) -> None:
        await self.revocations.apply(people.person_revoked(person_id))

    async def sign_in(self, name: str, password: str, address: str) -> NewSession:
        async with self.pool.acquire() as conn:
            return await people.sign_in(conn, name, password, address, self.policy)

    async def sign_out(self, principal: Principal) -> None:
        person_id = _person_id(principal)
        if principal.session_id is None:
            raise Forbidden("only a signed-in browser has a session to end; revoke a token with DELETE /api/tokens")
        async with self.pool.acquire() as conn:
            await people.sign_out(conn, person_id, principal.session_id, node=self.bus.node_id)
        await self._revoked(person_id)

    async def me(self, principal: Principal) -> Person | None:
        if principal.person_id is None:
            return None
        async with self.pool.acquire() as conn:
            row = await people_store.credentials_by_id(conn, principal.person_id)
        return person_model(row) if row is not None else None

    async def change_password(self, principal: Principal, current: str, new: str) -> None:
        person_id = _person_id(principal)
        async with self.pool.acquire() as conn:
            await people.change_password(conn, person_id, current, new, keep_session=principal.session_id,
                                         node=self.bus.node_id)
        await self._revoked(person_id)

    async def everyone(self) -> list[Person]:
        async with self.pool.acquire() as conn:
            return [person_model(r) for r in await people_store.list_all(conn)]

    async def add(self, name: str, role: Role, team_names: Sequence[str]) -> PersonCreated:
        async with self.pool.acquire() as conn:
            row, password = await people.add_person(conn, name, role, team_names)
        return PersonCreated(person=person_model(row), password=password)

    async def update(self, name: str, patch: PersonPatch) -> Person:
        async with self.pool.acquire() as conn:
            row = await people.update_person(conn, name, patch, node=self.bus.node_id)
        await self._revoked(row.id)
        return person_model(row)

    async def tokens(self, principal: Principal) -> list[PersonalToken]:
        async with self.pool.acquire() as conn:
            rows = await people_store.tokens_of(conn, _person_id(principal))
        return [PersonalToken.model_validate(dict(r.items())) for r in rows]

    async def add_token(self, principal: Principal, name: str) -> PersonalTokenCreated:
        async with self.pool.acquire() as conn:
            row, secret = await people.add_token(conn, _person_id(principal), name)
        return PersonalTokenCreated(token=PersonalToken.model_validate(dict(row.items())), secret=secret)

    async def revoke_token(self, principal: Principal, token_id: int) -> None:
        person_id = _person_id(principal)
        async with self.pool.acquire() as conn:
            await people.revoke_token(conn, person_id, token_id, node=self.bus.node_id)
        await self._revoked(person_id)
