"""The socket half of the auth matrix (issue 15): every event a client sends on ``/agent`` and ``/dashboard`` x
every kind of caller -> what the server answers, generated from the one table ``MATRIX``: a new event fails
``test_the_table_names_exactly_the_events_the_server_handles`` until it has a row.

Outcomes: ``refused`` (the connect is refused: no event reaches the server), ``ok`` (an ack ``{"ok": true}``), or
the error code of the ack. Cells of one caller run in the table's order on one connection, so ``screen:input``
comes after the ``screen:control`` that took the phone. The target is a phone of team A; viewer and operator are
people of team A, ``other_team`` an operator of team B (on ``/agent``: an agent of team B), ``revoked_token`` an
admin token (on ``/agent``: an agent's) revoked before it connects, ``expired_supabase_jwt`` a Supabase Auth JWT
past its ``exp``.
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import jwt
import pytest
import socketio

from phonefleet.protocol import events as ev
from phonefleet.protocol import health
from phonefleet.protocol import screen as sc
from phonefleet.protocol.wire import OrJson, TextPacket
from tests.agent_fixtures import AgentFactory
from tests.conftest import ADMIN, RunningServer
from tests.socket_team_fixtures import add_team, move_agent, person_token, set_teams

pytest_plugins = ["tests.agent_fixtures"]

AGENT: Final = ev.AGENT_NAMESPACE
DASHBOARD: Final = ev.DASHBOARD_NAMESPACE
REFUSED: Final = "refused"
OK: Final = "ok"
CALLERS: Final = ("anonymous", "viewer", "operator", "admin", "agent", "other_team", "revoked_token",
                  "expired_supabase_jwt")

_DASHBOARD_CLOSED = {"anonymous": REFUSED, "agent": REFUSED, "revoked_token": REFUSED,
                     "expired_supabase_jwt": REFUSED}
"""Who may not open ``/dashboard`` at all: no credentials, an agent, a revoked token, an expired JWT."""
_AGENT_CLOSED = {"anonymous": REFUSED, "viewer": REFUSED, "operator": REFUSED, "admin": REFUSED,
                 "revoked_token": REFUSED, "expired_supabase_jwt": REFUSED}
"""Who may not open ``/agent``: anyone without a valid agent token."""


def _agent(both: str, *, other_team: str | None = None) -> dict[str, str]:
    return {**_AGENT_CLOSED, "agent": both, "other_team": other_team or both}


MATRIX: Final[dict[tuple[str, str], dict[str, str]]] = {
    (DASHBOARD, ev.DASHBOARD_PING): {**_DASHBOARD_CLOSED, "viewer": OK, "operator": OK, "admin": OK,
                                     "other_team": OK},
    (DASHBOARD, sc.SCREEN_WATCH): {**_DASHBOARD_CLOSED, "viewer": OK, "operator": OK, "admin": OK,
                                   "other_team": "not_found"},
    (DASHBOARD, sc.SCREEN_CONTROL): {**_DASHBOARD_CLOSED, "viewer": "forbidden", "operator": OK, "admin": OK,
                                     "other_team": "not_found"},
    (DASHBOARD, sc.SCREEN_INPUT): {**_DASHBOARD_CLOSED, "viewer": "forbidden", "operator": OK, "admin": OK,
                                   "other_team": "not_found"},
    (DASHBOARD, sc.SCREEN_UNWATCH): {**_DASHBOARD_CLOSED, "viewer": OK, "operator": OK, "admin": OK,
                                     "other_team": OK},
    (AGENT, ev.AGENT_HELLO): _agent(OK),
    (AGENT, ev.AGENT_PING): _agent(OK),
    (AGENT, ev.AGENT_HEARTBEAT): _agent(OK),
    (AGENT, ev.DEVICE_UPDATE): _agent(OK),
    (AGENT, ev.ASSIGNMENT_STARTED): _agent(OK),
    (AGENT, ev.ASSIGNMENT_PROGRESS): _agent(OK),
    (AGENT, ev.ASSIGNMENT_FINISHED): _agent(OK),
    (AGENT, ev.AGENT_PAUSE): _agent(OK),
    (AGENT, ev.AGENT_RESUME): _agent(OK),
    (AGENT, health.DEVICE_RECOVERY): _agent(OK),
    (AGENT, health.DEVICE_SELFTEST_RESULT): _agent(OK),
    (AGENT, sc.SCREEN_FRAME): _agent("not_watched"),
}
"""(namespace, event) -> caller -> outcome: the whole socket half of the matrix."""

NOT_THEIRS: Final = 10**9
"""An assignment id of no agent: an agent's reports on someone else's work change nothing (and say so alike)."""


def payload(event: str, *, phone: int, serial: str) -> Any:
    """What each caller sends: a valid payload about team A's phone (``phone``) or the agent's own (``serial``)."""
    now = datetime.now(UTC).isoformat()
    return {
        ev.DASHBOARD_PING: {},
        sc.SCREEN_WATCH: {"device_id": phone, "max_width": 320},
        sc.SCREEN_CONTROL: {"device_id": phone, "take": True},
        sc.SCREEN_INPUT: {"device_id": phone, "input": {"type": "keyevent", "key": "HOME"}},
        sc.SCREEN_UNWATCH: {"device_id": phone},
        ev.AGENT_HELLO: {"devices": [{"serial": serial}]},
        ev.AGENT_PING: {},
        ev.AGENT_HEARTBEAT: {"running": []},
        ev.DEVICE_UPDATE: {"devices": [{"serial": serial, "battery": 50}]},
        ev.ASSIGNMENT_STARTED: {"items": [{"assignment_id": NOT_THEIRS}]},
        ev.ASSIGNMENT_PROGRESS: {"items": [{"assignment_id": NOT_THEIRS, "step_index": 0, "step_count": 1,
                                            "progress": 0.5}]},
        ev.ASSIGNMENT_FINISHED: {"results": [{"assignment_id": NOT_THEIRS, "outcome": "completed"}]},
        ev.AGENT_PAUSE: {"scope": "device", "serial": serial},
        ev.AGENT_RESUME: {"scope": "device", "serial": serial},
        health.DEVICE_RECOVERY: {"serial": serial, "rung": "reconnect", "phase": "started"},
        health.DEVICE_SELFTEST_RESULT: {"serial": serial, "passed": True, "checks": []},
        sc.SCREEN_FRAME: ({"serial": serial, "seq": 1, "width": 2, "height": 2, "phone_width": 2, "phone_height": 2,
                           "taken_at": now}, b"\xff\xd8 not really a jpeg"),
    }[event]


def protocol_events() -> set[str]:
    """Every event name the protocol defines (``area:verb`` constants), whichever way it travels."""
    return {value for module in (ev, sc, health) for name, value in vars(module).items()
            if name.isupper() and isinstance(value, str) and ":" in value and not value.startswith("/")}


def test_every_cell_is_filled_with_a_known_outcome() -> None:
    for key, cells in MATRIX.items():
        assert set(cells) == set(CALLERS), key
        assert all(o in (REFUSED, OK) or o.replace("_", "").isalpha() for o in cells.values()), key


def test_the_table_names_the_events_the_namespaces_read() -> None:
    """The events each namespace dispatches (the agent's through ``AGENT_EVENT_MODELS``) are the table's."""
    handled = {(AGENT, e) for e in [*ev.AGENT_EVENT_MODELS, ev.AGENT_PING, sc.SCREEN_FRAME]}
    handled |= {(DASHBOARD, e) for e in [ev.DASHBOARD_PING, *sc.DASHBOARD_SCREEN_EVENTS]}
    assert set(MATRIX) == handled


class Caller:
    """One connection of one caller to one namespace; ``None`` as its answer when the connect was refused."""

    def __init__(self, url: str, namespace: str, token: str | None) -> None:
        self.url, self.namespace, self.token = url, namespace, token
        self.sio = socketio.AsyncClient(reconnection=False, serializer=TextPacket, json=OrJson)

    async def __aenter__(self) -> "Caller | None":
        auth: dict[str, Any] = {"token": self.token} if self.token else {}
        try:
            await self.sio.connect(self.url, namespaces=[self.namespace], auth=auth, transports=["websocket"],
                                   wait_timeout=10)
        except socketio.exceptions.ConnectionError:
            return None
        return self

    async def __aexit__(self, *_: Any) -> None:
        if self.sio.connected:
            await self.sio.disconnect()

    async def outcome(self, event: str, data: Any) -> str:
        answer = await self.sio.call(event, data, namespace=self.namespace, timeout=30)
        assert isinstance(answer, dict), (event, answer)
        return OK if answer.get("ok") is True else str(answer["error"]["code"])

    async def unknown(self, event: str, data: Any) -> bool:
        """Did the server answer that it knows no such event?"""
        answer = await self.sio.call(event, data, namespace=self.namespace, timeout=30)
        error = answer.get("error") or {} if isinstance(answer, dict) else {}
        return error.get("code") == "unknown_event" or (
            error.get("code") == "validation_error" and "unknown event" in str(error.get("message")))


SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
ISSUER = "https://matrix.supabase.co/auth/v1"


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> RunningServer:
    """A server that also accepts Supabase Auth JWTs (so an expired one is refused for being expired)."""
    srv: RunningServer = await server_factory(supabase_jwt_secret=SECRET, supabase_jwt_issuer=ISSUER)
    return srv


def expired_jwt() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "6f1c1f0e-4b9e-4a43-9d2f-4fd2f1a0c001", "email": "late@example.com",
                       "aud": "authenticated", "role": "authenticated", "iss": ISSUER, "iat": now - 7200,
                       "exp": now - 120}, SECRET, algorithm="HS256")


async def credentials(server: RunningServer) -> dict[str, dict[str, str | None]]:
    """Each caller's token on each namespace."""
    pool = server.services.pool
    async with pool.acquire() as conn:
        team_a, team_b = await add_team(conn, "team-a"), await add_team(conn, "team-b")
    people = {who: await person_token(server.url, server.session, name, role)
              for who, name, role in [("viewer", "vera", "viewer"), ("operator", "otto", "operator"),
                                      ("other_team", "bea", "operator")]}
    agent_a, agent_b, gone = [await server.add_agent(n) for n in ("matrix-a", "matrix-b", "matrix-gone")]
    async with pool.acquire() as conn:
        await set_teams(conn, "vera", [team_a])
        await set_teams(conn, "otto", [team_a])
        await set_teams(conn, "bea", [team_b])
        await move_agent(conn, "rack", team_a)
        await move_agent(conn, "matrix-a", team_a)
        await move_agent(conn, "matrix-b", team_b)
        gone_id = await conn.fetchval("SELECT id FROM agents WHERE name = 'matrix-gone'")
    revoked_admin = (await server.services.revocations.add_admin("matrix-revoked")).token
    await server.services.revocations.revoke_admin("matrix-revoked")
    await server.services.revocations.revoke_agent(gone_id)
    common: dict[str, str | None] = {"anonymous": None, "expired_supabase_jwt": expired_jwt(), "admin": ADMIN,
                                     "agent": agent_a, **people}
    return {DASHBOARD: {**common, "revoked_token": revoked_admin},
            AGENT: {**common, "other_team": agent_b, "revoked_token": gone}}


async def test_every_cell_of_the_socket_matrix_against_a_live_server(server: RunningServer,
                                                                     agent_factory: AgentFactory) -> None:
    await agent_factory("rack", virtual=1)  # team A's phone, on a real agent: it streams and takes input
    devices = await server.ok("GET", "/api/devices")
    phone = devices[0]["id"]
    tokens = await credentials(server)
    got: dict[tuple[str, str], dict[str, str]] = {key: {} for key in MATRIX}
    for namespace in (DASHBOARD, AGENT):
        rows = [event for ns, event in MATRIX if ns == namespace]
        for caller in CALLERS:
            serial = f"matrix-{caller}-1"
            async with Caller(server.url, namespace, tokens[namespace][caller]) as connected:
                for event in rows:
                    got[(namespace, event)][caller] = REFUSED if connected is None else await connected.outcome(
                        event, payload(event, phone=phone, serial=serial))
    wrong = {f"{ns} {event} as {caller}: {got[(ns, event)][caller]} (the table: {want})"
             for (ns, event), cells in MATRIX.items() for caller, want in cells.items()
             if got[(ns, event)][caller] != want}
    assert not wrong, sorted(wrong)


async def test_the_table_names_exactly_the_events_the_server_handles(server: RunningServer) -> None:
    """Every event name of the protocol, sent by a caller who may send anything on each namespace: the server
    handles exactly the table's (any other is answered as unknown), so a new event fails here until it has a row."""
    agent_token = await server.add_agent("prober")
    for namespace, token in ((DASHBOARD, ADMIN), (AGENT, agent_token)):
        async with Caller(server.url, namespace, token) as connected:
            assert connected is not None
            handled = {event for event in sorted(protocol_events())
                       if not await connected.unknown(event, ({}, b"x") if event in sc.BINARY_EVENTS else {})}
        assert handled == {event for ns, event in MATRIX if ns == namespace}, namespace
