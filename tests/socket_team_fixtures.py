"""Teams for socket tests, made with SQL (the teams REST API is another branch's): teams, people of given teams
and roles with a personal token each, agents moved to a team, and a ``/dashboard`` client that keeps every event
it hears."""

import asyncio
from collections.abc import Callable
from typing import Any

import socketio

from phonefleet.protocol import events as ev
from phonefleet.protocol.wire import OrJson, TextPacket
from phonefleet.server.store import Conn
from tests.conftest import ADMIN


async def add_team(conn: Conn, name: str) -> int:
    team_id: int = await conn.fetchval("INSERT INTO teams (name) VALUES ($1) RETURNING id", name)
    return team_id


async def set_teams(conn: Conn, person: str, team_ids: list[int]) -> None:
    """The person belongs to exactly these teams."""
    person_id = await conn.fetchval("SELECT id FROM people WHERE name = $1", person)
    await conn.execute("DELETE FROM team_members WHERE person_id = $1", person_id)
    await conn.executemany("INSERT INTO team_members (team_id, person_id) VALUES ($1, $2)",
                           [(t, person_id) for t in team_ids])


async def move_agent(conn: Conn, agent: str, team_id: int) -> int:
    """Moves the agent (and so its phones) to the team; returns its id."""
    agent_id: int = await conn.fetchval("UPDATE agents SET team_id = $2 WHERE name = $1 RETURNING id", agent, team_id)
    return agent_id


async def person_token(base_url: str, session: Any, name: str, role: str) -> str:
    """A new person with ``role`` and a personal token of theirs (made as the dashboard does: signed in)."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with session.post(base_url + "/api/users", json={"name": name, "role": role}, headers=auth) as r:
        assert r.status == 201, await r.text()
        password = (await r.json())["password"]
    async with session.post(base_url + "/api/session", json={"name": name, "password": password}) as r:
        assert r.status == 201, await r.text()
        cookie = r.cookies["pf_session"].value
        csrf = (await r.json())["csrf_token"]
    async with session.post(base_url + "/api/tokens", json={"name": "socket"},
                            headers={"Cookie": f"pf_session={cookie}", "X-CSRF-Token": csrf}) as r:
        assert r.status == 201, await r.text()
        secret: str = (await r.json())["secret"]
    return secret


class Listener:
    """A ``/dashboard`` client that keeps every event it hears, in order."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False, serializer=TextPacket, json=OrJson)
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Condition()
        self.sio.on("*", self._on_any, namespace=ev.DASHBOARD_NAMESPACE)

    async def _on_any(self, event: str, *args: Any) -> None:
        async with self._changed:
            self.events.append((event, args[0] if len(args) == 1 else list(args)))
            self._changed.notify_all()

    async def connect(self) -> "Listener":
        await self.sio.connect(self.base_url, namespaces=[ev.DASHBOARD_NAMESPACE], auth={"token": self.token},
                               transports=["websocket"], wait_timeout=10)
        return self

    async def close(self) -> None:
        await self.sio.disconnect()

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, namespace=ev.DASHBOARD_NAMESPACE, timeout=30)

    def of(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
