"""Every route declares who may call it, in the one table (``api.ROUTES``) the server, the OpenAPI document and
these checks are generated from; a caller below a route's level is refused before anything runs."""

import re

import pytest

from phonefleet.protocol.enums import ROLE_ORDER, Role, role_at_least
from phonefleet.server.api import ROUTES, Api
from phonefleet.server.routes import ACCESS_LEVELS, Route
from tests.conftest import RunningServer

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
