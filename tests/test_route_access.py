"""Every route declares who may call it, in the one table (``api.ROUTES``) the server, the OpenAPI document and
these checks are generated from; a caller below a route's level is refused before anything runs.

The auth matrix: ``MATRIX`` lists every (method, path) of ``api.ROUTES`` (a new route fails until it is added)
with the cells that differ from what its access and owns imply; each cell runs against a live server."""

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, get_args

import jwt
import pytest

from phonefleet.protocol.enums import ROLE_ORDER, Role, role_at_least
from phonefleet.server.api import ROUTES, Api
from phonefleet.server.routes import ACCESS_LEVELS, Route
from phonefleet.server.store.owners import TEAM_KINDS
from phonefleet.sim.agent import SimAgent
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job
from tests.team_fixtures import Member, add_member, add_team, move_agent, personal_token

SELF_SERVICE = {"/api/session", "/api/session/password", "/api/tokens", "/api/tokens/{id}"}
"""Writes any signed-in person may make: about themselves only."""
ADMIN_READS = {"/api/admins", "/api/users"}
"""Reads of the management surfaces (tokens and people), for admins only."""


def _path(route: Route) -> str:
    return re.sub(r"\{name\}", "someone", route.path.replace("{id}", "1"))


def test_a_route_cannot_be_declared_without_an_access_level() -> None:
    with pytest.raises(TypeError, match="access"):
        Route("GET", "/api/x", Api.list_jobs, "no level")  # type: ignore[call-arg]


def test_every_route_declares_a_known_access_level() -> None:
    assert ROUTES
    for route in ROUTES:
        assert route.access in ACCESS_LEVELS, (route.method, route.path, route.access)
    assert [str(r) for r in ROLE_ORDER] == [level for level in ACCESS_LEVELS if level in set(Role)]


def test_reads_are_for_viewers_and_changes_need_more_unless_they_are_ones_own() -> None:
    for route in ROUTES:
        if route.access in ("public", "agent"):
            continue
        if route.method == "GET":
            assert route.access == ("admin" if route.path in ADMIN_READS else "viewer"), (route.path, route.access)
        elif route.path in SELF_SERVICE:
            assert route.access == "viewer", (route.method, route.path)
        else:
            assert route.access in ("operator", "admin"), (route.method, route.path, route.access)


def test_roles_are_ordered_each_including_the_one_before() -> None:
    assert (Role.viewer, Role.operator, Role.admin) == ROLE_ORDER
    for i, role in enumerate(ROLE_ORDER):
        for j, needed in enumerate(ROLE_ORDER):
            assert role_at_least(role, needed) is (i >= j)


async def test_every_route_refuses_a_caller_below_its_level(server: RunningServer) -> None:
    """Generated from the table: no credentials is a 401; a viewer's token on an operator or admin route, an
    operator's on an admin route, and a person's on an agent route are 403 (nothing runs)."""
    secrets: dict[str, str] = {}
    for role in ROLE_ORDER:
        created = await server.ok("POST", "/api/users", {"name": f"who-{role}", "role": str(role)})
        async with server.session.post(server.url + "/api/session",
                                       json={"name": f"who-{role}", "password": created["password"]}) as r:
            assert r.status == 201
            cookie = r.cookies["pf_session"].value
            csrf = (await r.json())["csrf_token"]
        async with server.session.post(server.url + "/api/tokens", json={"name": "matrix"},
                                       headers={"Cookie": f"pf_session={cookie}", "X-CSRF-Token": csrf}) as r:
            assert r.status == 201, await r.text()
            secrets[str(role)] = (await r.json())["secret"]
    checked = 0
    for route in ROUTES:
        if route.access == "public":
            continue
        status, body = await server.request(route.method, _path(route), token=None)
        assert status == 401, (route.method, route.path, status, body)
        for held, secret in secrets.items():
            allowed = route.access != "agent" and role_at_least(Role(held), Role(route.access))
            if allowed:
                continue
            status, body = await server.request(route.method, _path(route), token=secret)
            assert status == 403 and body["error"]["code"] == "forbidden", (held, route.method, route.path, body)
            checked += 1
    below = {"agent": len(ROLE_ORDER), **{str(role): i for i, role in enumerate(ROLE_ORDER)}}
    assert checked == sum(below[r.access] for r in ROUTES if r.access != "public") > 0


# ---------------------------------------------------------------------------------------------- the auth matrix

Column = Literal["anonymous", "viewer", "operator", "admin", "agent", "other_team", "revoked_token",
                 "expired_supabase_jwt"]
COLUMNS: tuple[Column, ...] = get_args(Column)
PASS: Final = "pass"
"""Let through: neither 401 nor 403 nor the 404 of another team's object; the handler answers (a 422 for an empty
body, a 404 for a name that does not exist, ...), never a 5xx."""
Expect = int | Literal["pass"]

MATRIX: dict[tuple[str, str], dict[Column, Expect]] = {
    ("GET", "/healthz"): {},
    ("GET", "/livez"): {},
    ("GET", "/metrics"): {},
    ("GET", "/api/openapi.json"): {},
    ("POST", "/api/jobs"): {},
    ("GET", "/api/jobs"): {},
    ("POST", "/api/jobs/batch"): {},
    ("GET", "/api/jobs/{id}"): {},
    ("POST", "/api/jobs/{id}/requeue"): {},
    ("PATCH", "/api/jobs/{id}"): {},
    ("DELETE", "/api/jobs/{id}"): {},
    ("GET", "/api/jobs/{id}/assignments"): {},
    ("GET", "/api/assignments"): {},
    ("GET", "/api/assignments/{id}/artifacts"): {},
    ("GET", "/api/assignments/{id}/steps"): {},
    ("GET", "/api/assignments/{id}/logcat"): {},
    ("GET", "/api/assignments/{id}/artifacts/{name}"): {},
    ("GET", "/api/devices"): {},
    ("PATCH", "/api/devices/{id}"): {},
    ("GET", "/api/devices/{id}"): {},
    ("GET", "/api/devices/{id}/artifacts"): {},
    ("GET", "/api/devices/{id}/events"): {},
    ("POST", "/api/devices/{id}/quarantine"): {},
    ("POST", "/api/devices/{id}/release"): {},
    ("POST", "/api/devices/{id}/recover"): {},
    ("GET", "/api/devices/{id}/screen"): {},
    ("POST", "/api/devices/{id}/input"): {},
    ("POST", "/api/devices/{id}/control"): {},
    ("DELETE", "/api/devices/{id}/control"): {},
    ("GET", "/api/fleet/health"): {},
    ("GET", "/api/fleet/policy"): {},
    ("PATCH", "/api/fleet/policy"): {},
    ("GET", "/api/agents"): {},
    ("POST", "/api/agents"): {},
    ("PATCH", "/api/agents/{id}"): {},
    ("DELETE", "/api/agents/{id}/token"): {},
    ("POST", "/api/agents/{id}/token"): {},
    ("GET", "/api/admins"): {},
    ("POST", "/api/admins"): {},
    ("DELETE", "/api/admins/{name}"): {},
    ("POST", "/api/session"): {},
    ("GET", "/api/session"): {},
    ("DELETE", "/api/session"): {"viewer": 403, "operator": 403, "admin": 403, "other_team": 403},  # a token has
    # no session to end (a browser's cookie has: that is this route's caller)
    ("POST", "/api/session/password"): {},
    ("GET", "/api/tokens"): {},
    ("POST", "/api/tokens"): {},
    ("DELETE", "/api/tokens/{id}"): {},
    ("GET", "/api/users"): {},
    ("POST", "/api/users"): {},
    ("PATCH", "/api/users/{name}"): {},
    ("GET", "/api/teams"): {},
    ("POST", "/api/teams"): {},
    ("GET", "/api/teams/{id}"): {},
    ("PATCH", "/api/teams/{id}"): {},
    ("DELETE", "/api/teams/{id}"): {},
    ("PUT", "/api/teams/{id}/members/{name}"): {},
    ("DELETE", "/api/teams/{id}/members/{name}"): {},
    ("GET", "/api/scheduler"): {},
    ("POST", "/api/scheduler/stop"): {},
    ("POST", "/api/scheduler/start"): {},
    ("GET", "/api/schedules"): {},
    ("POST", "/api/schedules"): {},
    ("GET", "/api/schedules/{id}"): {},
    ("PATCH", "/api/schedules/{id}"): {},
    ("DELETE", "/api/schedules/{id}"): {},
    ("POST", "/api/schedules/{id}/run"): {},
    ("GET", "/api/schedules/{id}/jobs"): {},
    ("GET", "/api/audit"): {},
    ("GET", "/api/stats"): {},
    ("GET", "/api/agent/assignments"): {},
    ("POST", "/api/agent/events"): {},
    ("PUT", "/api/agent/artifacts/{id}/{name}"): {},
    ("POST", "/api/agent/artifacts/{id}/{name}/lost"): {},
}
"""Every route, with the cells that differ from ``derived``. Columns: no credentials; personal tokens of a viewer,
an operator and an admin of team A (the team owning every object a path names); an agent's token (of team A); a
person of team B with the highest role short of admin the route needs (operator for admin routes); a revoked
personal token; an expired Supabase JWT (the server trusts Supabase's secret)."""


def derived(route: Route, column: Column) -> Expect:
    """The cell implied by the route's access and owns."""
    if route.access == "public":
        return PASS
    if column in ("anonymous", "revoked_token", "expired_supabase_jwt"):
        return 401
    if route.access == "agent" or column == "agent":
        return PASS if route.access == column else 403
    if not role_at_least(_role(route, column), Role(route.access)):
        return 403
    return 404 if column == "other_team" and route.owns in TEAM_KINDS else PASS


def expected(route: Route, column: Column) -> Expect:
    return MATRIX[(route.method, route.path)].get(column, derived(route, column))


def _role(route: Route, column: Column) -> Role:
    if column == "other_team":
        return Role(route.access) if route.access in ("viewer", "operator") else Role.operator
    return Role(column)


def test_the_matrix_lists_exactly_the_routes() -> None:
    listed = [(r.method, r.path) for r in ROUTES]
    assert len(set(listed)) == len(listed)
    assert set(MATRIX) == set(listed), {"not in MATRIX": set(listed) - set(MATRIX),
                                        "not a route": set(MATRIX) - set(listed)}
    for key, cells in MATRIX.items():
        assert set(cells) <= set(COLUMNS), key
    route = next(r for r in ROUTES if r.method == "DELETE" and r.path == "/api/jobs/{id}")
    assert [expected(route, c) for c in COLUMNS] == [401, 403, PASS, PASS, 403, 404, 401, 401]


def test_every_route_with_an_id_names_what_the_id_is() -> None:
    """So that a new route cannot forget to keep other teams' objects out of sight."""
    for route in ROUTES:
        assert (route.owns is not None) == ("{id}" in route.path), (route.method, route.path, route.owns)


SUPABASE_SECRET = "matrix-secret-jwt-token-with-at-least-32-characters"
MISSING = 999_999_999
FRESH = {("DELETE", "/api/jobs/{id}"), ("DELETE", "/api/schedules/{id}"), ("DELETE", "/api/agents/{id}/token"),
         ("POST", "/api/agents/{id}/token")}
"""Routes that end what their path names: each call gets an object of its own."""


def _expired_jwt() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "6f1c1f0e-4b9e-4a43-9d2f-4fd2f1a0c0aa", "email": "late@example.com",
                       "aud": "authenticated", "role": "authenticated", "iat": now - 7200, "exp": now - 3600},
                      SUPABASE_SECRET, algorithm="HS256")


@dataclass
class MatrixWorld:
    server: RunningServer
    team_a: int
    people: dict[str, Member]
    """viewer, operator, admin (of team A); viewer_b, operator_b (of team B)"""
    agent: SimAgent
    ids: dict[str, int]
    """team A's job, assignment, device, agent, schedule and the team itself"""
    revoked: str
    created: int = 0

    def credential(self, route: Route, column: Column) -> str | None:
        if column in ("viewer", "operator", "admin"):
            return self.people[column].token
        if column == "other_team":
            return self.people[f"{_role(route, column)}_b"].token
        return {"anonymous": None, "agent": self.agent.token, "revoked_token": self.revoked,
                "expired_supabase_jwt": _expired_jwt()}[column]

    async def object_id(self, route: Route) -> int:
        if route.owns == "own_token":
            return MISSING  # nobody's: revoking one's own token would end the column
        assert route.owns is not None
        if (route.method, route.path) not in FRESH:
            return self.ids[route.owns]
        self.created += 1
        if route.owns == "job":
            job = await self.server.ok("POST", "/api/jobs", _waiting(self.team_a))
            return int(job["id"])
        if route.owns == "schedule":
            schedule = await self.server.ok("POST", "/api/schedules", {
                "name": f"fresh {self.created}", "template": open_url_job(), "interval_sec": 86_400,
                "team_id": self.team_a})
            return int(schedule["id"])
        await self.server.add_agent(f"fresh-{self.created}")
        return await move_agent(self.server, f"fresh-{self.created}", self.team_a)

    async def path(self, route: Route) -> str:
        path = route.path
        if "{id}" in path:
            path = path.replace("{id}", str(await self.object_id(route)))
        return path.replace("{name}", "shot.png" if "artifacts" in path else "someone")


def _waiting(team_id: int) -> dict[str, Any]:
    return open_url_job(run_at=(datetime.now(UTC) + timedelta(days=1)).isoformat(), team_id=team_id)


async def _matrix_world(server: RunningServer) -> MatrixWorld:
    team_a, team_b = await add_team(server, "alpha"), await add_team(server, "bravo")
    people = {role: await add_member(server, f"{role}-a", role, [team_a]) for role in ("viewer", "operator", "admin")}
    for role in ("viewer", "operator"):
        people[f"{role}_b"] = await add_member(server, f"{role}-b", role, [team_b])
    token = await server.add_agent("sim-a")
    agent_id = await move_agent(server, "sim-a", team_a)
    agent = SimAgent(server.url, token, ["sim-a-0", "sim-a-1"], auto_finish=True)
    server.clients.append(agent)
    await agent.connect()

    async def idle() -> list[int]:
        return [d["id"] for d in await server.ok("GET", "/api/devices") if d["state"] == "idle"]

    devices = await eventually(lambda: _all(idle, 2))
    assert devices is not None
    job = await server.ok("POST", "/api/jobs", open_url_job(team_id=team_a))
    runs = await eventually(lambda: _items(server, f"/api/jobs/{job['id']}/assignments"))
    schedule = await server.ok("POST", "/api/schedules", {"name": "of a", "template": open_url_job(),
                                                           "interval_sec": 86_400, "team_id": team_a})
    created = await server.ok("POST", "/api/users", {"name": "revoked-a", "role": "operator"})
    revoked = await personal_token(server, "revoked-a", created["password"])
    status, tokens = await server.request("GET", "/api/tokens", token=revoked)
    assert status == 200 and len(tokens) == 1
    status, _ = await server.request("DELETE", f"/api/tokens/{tokens[0]['id']}", token=revoked)
    assert status == 204
    return MatrixWorld(server=server, team_a=team_a, people=people, agent=agent, revoked=revoked,
                       ids={"job": job["id"], "assignment": runs[0]["id"], "device": devices[0], "agent": agent_id,
                            "schedule": schedule["id"], "team": team_a})


async def _all(check: Callable[[], Awaitable[list[int]]], count: int) -> list[int] | None:
    found = await check()
    return found if len(found) >= count else None


async def _items(server: RunningServer, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await server.ok("GET", path))["items"]
    return items


def _differs(route: Route, want: Expect, status: int, body: Any, object_id: str) -> bool:
    """Whether an answer breaks its cell."""
    if want != PASS:
        code = {401: "unauthorized", 403: "forbidden", 404: "not_found"}[int(want)]
        return status != want or not isinstance(body, dict) or body["error"]["code"] != code
    refused_as_hidden = (status == 404 and isinstance(body, dict)
                         and body["error"]["message"] == f"{route.owns} {object_id} not found")
    return status in (401, 403) or status >= 500 or refused_as_hidden


async def test_every_cell_of_the_matrix_holds_on_a_live_server(server_factory: Any) -> None:
    server: RunningServer = await server_factory(supabase_jwt_secret=SUPABASE_SECRET)
    world = await _matrix_world(server)
    broken: list[tuple[str, str, str, Expect, int, Any]] = []
    cells = 0
    for route in ROUTES:
        for column in COLUMNS:
            want = expected(route, column)
            path = await world.path(route)
            body: dict[str, Any] | None = {} if route.body is not None and route.body_required else None
            status, answer = await server.request(route.method, path, token=world.credential(route, column),
                                                  json=body)
            object_id = path.split("/")[3] if route.owns else ""
            # team A's agent and phones, named to a person of B (public routes are nobody's view: /metrics is
            # the fleet's, for its scraper)
            leaks = column == "other_team" and route.access != "public" and "sim-a" in json.dumps(answer)
            if leaks or _differs(route, want, status, answer, object_id):
                broken.append((route.method, path, column, want, status, answer))
            cells += 1
    assert broken == []
    assert cells == len(ROUTES) * len(COLUMNS)
    # the admin token and the agent still work: no cell ended a credential another needs
    assert (await server.request("GET", "/api/jobs", token=ADMIN))[0] == 200
    assert (await server.request("GET", "/api/agent/assignments", token=world.agent.token))[0] == 200
