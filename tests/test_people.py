"""People sign in with a name and password and act with their role: a session cookie (HttpOnly, SameSite=Strict,
CSRF-checked on every change) for the dashboard, personal tokens for scripts; sign-out, a revoked token or a
disabled person ends access at once, sockets included, on every node; failed sign-ins are limited per account
and per address across nodes."""

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import socketio

from phonefleet.server.auth import SESSION_COOKIE
from phonefleet.sim.agent import SimDashboard
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job

Factory = Callable[..., Awaitable[RunningServer]]


@dataclass
class Signed:
    """A browser's session: the cookie it got and the CSRF token the sign-in answered."""

    cookie: str
    csrf: str
    set_cookie: str
    body: dict[str, Any]

    @property
    def header(self) -> str:
        return f"{SESSION_COOKIE}={self.cookie}"


async def sign_in(server: RunningServer, name: str, password: str, *,
                  headers: dict[str, str] | None = None) -> tuple[int, Any, Signed | None]:
    async with server.session.post(server.url + "/api/session", json={"name": name, "password": password},
                                   headers=headers or {}) as r:
        body = await r.json()
        set_cookie = r.headers.get("Set-Cookie")
        if r.status != 201 or set_cookie is None:
            return r.status, body, None
        morsel = r.cookies[SESSION_COOKIE]
        return r.status, body, Signed(morsel.value, body["csrf_token"], set_cookie, body)


async def with_cookie(server: RunningServer, method: str, path: str, signed: Signed, *, csrf: str | None = None,
                      json: Any = None) -> tuple[int, Any]:
    headers = {"Cookie": signed.header}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    async with server.session.request(method, server.url + path, json=json, headers=headers) as r:
        return r.status, await r.json() if r.content_type == "application/json" else await r.text()


async def add_person(server: RunningServer, name: str, role: str) -> str:
    created = await server.ok("POST", "/api/users", {"name": name, "role": role})
    assert created["person"] == {**created["person"], "name": name, "role": role, "disabled": False}
    password: str = created["password"]
    return password


async def signed_in(server: RunningServer, name: str, role: str) -> Signed:
    password = await add_person(server, name, role)
    status, body, signed = await sign_in(server, name, password)
    assert status == 201 and signed is not None, body
    return signed


def server_cli(dsn: str, *args: str) -> "subprocess.CompletedProcess[str]":
    """``phonefleet-server ARGS`` as its own process, against the test database (DATABASE_URL)."""
    env = {**os.environ, "DATABASE_URL": dsn, "PHONEFLEET_ADMIN_TOKEN": ADMIN}
    return subprocess.run([sys.executable, "-m", "phonefleet.server.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


async def run_cli(dsn: str, *args: str) -> "subprocess.CompletedProcess[str]":
    return await asyncio.to_thread(server_cli, dsn, *args)


async def job_count(server: RunningServer) -> int:
    return int((await server.ok("GET", "/api/jobs"))["total"])


# ---------------------------------------------------------------------------------------- sign-in, sign-out


async def test_a_person_signs_in_and_the_cookie_is_httponly_strict_and_not_kept_in_plain(
        server: RunningServer) -> None:
    signed = await signed_in(server, "ada", "operator")
    flags = [part.strip().lower() for part in signed.set_cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags, "plain HTTP: a Secure cookie would never come back"
    assert signed.body["name"] == "ada" and signed.body["role"] == "operator" and len(signed.csrf) >= 32
    status, me = await with_cookie(server, "GET", "/api/session", signed)
    assert status == 200 and (me["name"], me["role"], me["csrf_token"]) == ("ada", "operator", signed.csrf)
    async with server.services.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT token_hash FROM person_sessions")
        hashed = await conn.fetchval("SELECT password_hash FROM people WHERE name = 'ada'")
    assert stored != signed.cookie and signed.cookie not in stored
    assert hashed.startswith("$argon2id$")


async def test_the_cookie_is_secure_behind_a_tls_proxy(server: RunningServer) -> None:
    password = await add_person(server, "tls", "viewer")
    status, _, signed = await sign_in(server, "tls", password, headers={"X-Forwarded-Proto": "https"})
    assert status == 201 and signed is not None
    assert "secure" in [part.strip().lower() for part in signed.set_cookie.split(";")]


async def test_a_wrong_password_or_unknown_name_answers_401_and_sets_no_cookie(server: RunningServer) -> None:
    await add_person(server, "bob", "viewer")
    for name, password in (("bob", "not-his-password"), ("nobody", "whatever")):
        status, body, signed = await sign_in(server, name, password)
        assert (status, body["error"]["code"], signed) == (401, "unauthorized", None)
        assert body["error"]["message"] == "wrong name or password"  # the same words: names are not revealed
    status, body, _ = await sign_in(server, "bob", "")
    assert status == 422 and body["error"]["details"][0]["field"] == "password"


async def test_sign_out_ends_the_session_on_the_server_and_drops_its_sockets_on_every_node(
        server_factory: Factory) -> None:
    one, two = await server_factory(), await server_factory()
    signed = await signed_in(one, "carol", "viewer")
    other = await signed_in(one, "dave", "viewer")
    sockets = [SimDashboard(url, None, cookie=signed.header) for url in (one.url, two.url)]
    bystander = SimDashboard(two.url, None, cookie=other.header)
    for dashboard in [*sockets, bystander]:
        await dashboard.connect()
    try:
        status, _ = await with_cookie(one, "DELETE", "/api/session", signed)
        assert status == 403, "sign-out changes something: it needs the CSRF header too"
        status, _ = await with_cookie(one, "DELETE", "/api/session", signed, csrf=signed.csrf)
        assert status == 204
        for dashboard in sockets:
            async def gone(d: SimDashboard = dashboard) -> bool:
                return not d.sio.connected

            await eventually(gone, timeout=5)
        assert bystander.sio.connected
        for server in (one, two):
            status, body = await with_cookie(server, "GET", "/api/session", signed)
            assert status == 401 and body["error"]["code"] == "unauthorized"
        with pytest.raises(socketio.exceptions.ConnectionError):
            await SimDashboard(two.url, None, cookie=signed.header).connect()
    finally:
        for dashboard in [*sockets, bystander]:
            if dashboard.sio.connected:
                await dashboard.disconnect()


async def test_a_session_socket_from_another_origin_is_refused(server: RunningServer) -> None:
    """SameSite keeps other sites' pages from sending the cookie; a sibling origin of the same site is refused by
    the Origin check."""
    signed = await signed_in(server, "olaf", "viewer")
    host = server.url.removeprefix("http://")
    for origin, accepted in (("http://evil.example", False), (f"http://{host}", True)):
        client = socketio.AsyncClient(reconnection=False)
        try:
            if accepted:
                await client.connect(server.url, namespaces=["/dashboard"], transports=["websocket"],
                                     headers={"Cookie": signed.header, "Origin": origin}, wait_timeout=10)
                assert client.connected
            else:
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await client.connect(server.url, namespaces=["/dashboard"], transports=["websocket"],
                                         headers={"Cookie": signed.header, "Origin": origin}, wait_timeout=10)
        finally:
            if client.connected:
                await client.disconnect()


async def test_screen_control_over_the_socket_needs_the_operator_role(server: RunningServer) -> None:
    """A viewer's dashboard may watch but not take control; an operator's passes the role check (and meets the
    next one: there is no such phone)."""
    viewer = SimDashboard(server.url, None, cookie=(await signed_in(server, "vic", "viewer")).header)
    operator = SimDashboard(server.url, None, cookie=(await signed_in(server, "opal", "operator")).header)
    for dashboard in (viewer, operator):
        await dashboard.connect()
    try:
        request = {"device_id": 999, "take": True}
        refused = await viewer.sio.call("screen:control", request, namespace="/dashboard", timeout=10)
        assert refused["ok"] is False and refused["error"]["code"] == "forbidden", refused
        assert "operator" in refused["error"]["message"]
        answered = await operator.sio.call("screen:control", request, namespace="/dashboard", timeout=10)
        assert answered["ok"] is False and answered["error"]["code"] == "not_found", answered
    finally:
        for dashboard in (viewer, operator):
            await dashboard.disconnect()


async def test_a_dashboard_socket_needs_a_session_or_a_token(server: RunningServer) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        await SimDashboard(server.url, None, cookie=f"{SESSION_COOKIE}=pfses_made-up").connect()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await SimDashboard(server.url, None).connect()


# -------------------------------------------------------------------------------------------------- CSRF


async def test_a_cookie_request_without_the_right_csrf_token_is_refused_and_changes_nothing(
        server: RunningServer) -> None:
    signed = await signed_in(server, "erin", "operator")
    for csrf in (None, "wrong", ""):
        status, body = await with_cookie(server, "POST", "/api/jobs", signed, csrf=csrf, json=open_url_job())
        assert status == 403 and "X-CSRF-Token" in body["error"]["message"], (csrf, body)
    other = await signed_in(server, "frank", "operator")
    status, _ = await with_cookie(server, "POST", "/api/jobs", signed, csrf=other.csrf, json=open_url_job())
    assert status == 403, "another session's CSRF token does not do"
    assert await job_count(server) == 0
    status, job = await with_cookie(server, "POST", "/api/jobs", signed, csrf=signed.csrf, json=open_url_job())
    assert status == 201 and job["title"] == "open example"
    status, _ = await with_cookie(server, "GET", "/api/jobs", signed)
    assert status == 200, "reads need no CSRF token"


async def test_sign_in_takes_only_json(server: RunningServer) -> None:
    """A cross-site form cannot sign a browser in as someone else (it can post a form, not JSON)."""
    password = await add_person(server, "gina", "viewer")
    async with server.session.post(server.url + "/api/session", data=f'{{"name":"gina","password":"{password}"}}',
                                   headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 422 and SESSION_COOKIE not in r.cookies


# ------------------------------------------------------------------------------------------------- roles


async def test_each_role_may_do_what_it_includes_and_nothing_more(server: RunningServer) -> None:
    viewer = await signed_in(server, "vera", "viewer")
    operator = await signed_in(server, "otto", "operator")
    admin = await signed_in(server, "ann", "admin")

    status, body = await with_cookie(server, "POST", "/api/jobs", viewer, csrf=viewer.csrf, json=open_url_job())
    assert status == 403 and "operator" in body["error"]["message"]
    assert await job_count(server) == 0
    for who in (viewer, operator):
        status, _ = await with_cookie(server, "GET", "/api/jobs", who)
        assert status == 200
    status, job = await with_cookie(server, "POST", "/api/jobs", operator, csrf=operator.csrf, json=open_url_job())
    assert status == 201
    status, _ = await with_cookie(server, "DELETE", f"/api/jobs/{job['id']}", operator, csrf=operator.csrf)
    assert status == 204

    for path, body_ in (("/api/agents", {"name": "pc-1"}), ("/api/users", {"name": "x", "role": "admin"})):
        status, body = await with_cookie(server, "POST", path, operator, csrf=operator.csrf, json=body_)
        assert status == 403 and "admin" in body["error"]["message"], (path, body)
    status, _ = await with_cookie(server, "POST", "/api/scheduler/stop", operator, csrf=operator.csrf)
    assert status == 403
    assert (await server.ok("GET", "/api/scheduler"))["running"] is True
    assert await server.ok("GET", "/api/agents") == []
    status, _ = await with_cookie(server, "POST", "/api/agents", admin, csrf=admin.csrf, json={"name": "pc-1"})
    assert status == 201


async def test_an_admin_manages_people_over_rest_and_the_last_admin_stays_one(server: RunningServer) -> None:
    admin = await signed_in(server, "root", "admin")
    status, created = await with_cookie(server, "POST", "/api/users", admin, csrf=admin.csrf,
                                        json={"name": "hal", "role": "viewer"})
    assert status == 201 and len(created["password"]) >= 16
    status, again = await with_cookie(server, "POST", "/api/users", admin, csrf=admin.csrf,
                                      json={"name": "hal", "role": "admin"})
    assert status == 409 and again["error"]["code"] == "conflict"
    status, bad = await with_cookie(server, "POST", "/api/users", admin, csrf=admin.csrf,
                                    json={"name": "ivy", "role": "owner"})
    assert status == 422 and bad["error"]["details"][0]["field"] == "role"
    status, hal = await with_cookie(server, "PATCH", "/api/users/hal", admin, csrf=admin.csrf,
                                    json={"role": "operator"})
    assert status == 200 and hal["role"] == "operator"
    status, listed = await with_cookie(server, "GET", "/api/users", admin)
    assert status == 200 and [(p["name"], p["role"]) for p in listed] == [("hal", "operator"), ("root", "admin")]
    status, last = await with_cookie(server, "PATCH", "/api/users/root", admin, csrf=admin.csrf,
                                     json={"role": "viewer"})
    assert status == 409 and "last enabled admin" in last["error"]["message"]
    status, _ = await with_cookie(server, "PATCH", "/api/users/nobody", admin, csrf=admin.csrf, json={"role": "admin"})
    assert status == 404


async def test_a_role_change_reconnects_the_persons_dashboards_with_the_new_role(server: RunningServer) -> None:
    signed = await signed_in(server, "jay", "operator")
    dashboard = SimDashboard(server.url, None, cookie=signed.header)
    await dashboard.connect()
    await server.ok("PATCH", "/api/users/jay", {"role": "viewer"})

    async def gone() -> bool:
        return not dashboard.sio.connected

    await eventually(gone, timeout=5)
    status, body = await with_cookie(server, "POST", "/api/jobs", signed, csrf=signed.csrf, json=open_url_job())
    assert status == 403, body


# ------------------------------------------------------------------------------------- disabled, password


async def test_disabling_a_person_ends_their_sessions_tokens_and_sign_ins(server: RunningServer) -> None:
    password = await add_person(server, "kim", "operator")
    _, _, signed = await sign_in(server, "kim", password)
    assert signed is not None
    status, token = await with_cookie(server, "POST", "/api/tokens", signed, csrf=signed.csrf, json={"name": "ci"})
    assert status == 201
    dashboard = SimDashboard(server.url, token["secret"])
    await dashboard.connect()
    disabled = await server.ok("PATCH", "/api/users/kim", {"disabled": True})
    assert disabled["disabled"] is True

    async def gone() -> bool:
        return not dashboard.sio.connected

    await eventually(gone, timeout=5)
    status, _ = await with_cookie(server, "GET", "/api/jobs", signed)
    assert status == 401
    status, _ = await server.request("GET", "/api/jobs", token=token["secret"])
    assert status == 401
    status, body, again = await sign_in(server, "kim", password)
    assert (status, again) == (403, None) and "disabled" in body["error"]["message"]
    await server.ok("PATCH", "/api/users/kim", {"disabled": False})
    status, _, again = await sign_in(server, "kim", password)
    assert status == 201, "enabled again: a new sign-in works"
    status, _ = await server.request("GET", "/api/jobs", token=token["secret"])
    assert status == 401, "the tokens disabling ended stay ended"


async def test_a_person_changes_their_own_password_and_their_other_sessions_end(server: RunningServer) -> None:
    password = await add_person(server, "lee", "viewer")
    _, _, here = await sign_in(server, "lee", password)
    _, _, elsewhere = await sign_in(server, "lee", password)
    assert here is not None and elsewhere is not None
    status, body = await with_cookie(server, "POST", "/api/session/password", here, csrf=here.csrf,
                                     json={"current_password": "wrong-one-entirely", "new_password": "x" * 12})
    assert status == 422 and body["error"]["details"][0]["field"] == "current_password"
    status, body = await with_cookie(server, "POST", "/api/session/password", here, csrf=here.csrf,
                                     json={"current_password": password, "new_password": "short"})
    assert status == 422 and body["error"]["details"][0]["field"] == "new_password"
    status, _ = await with_cookie(server, "POST", "/api/session/password", here, csrf=here.csrf,
                                  json={"current_password": password, "new_password": "a new passphrase"})
    assert status == 204
    assert (await with_cookie(server, "GET", "/api/session", here))[0] == 200
    assert (await with_cookie(server, "GET", "/api/session", elsewhere))[0] == 401
    assert (await sign_in(server, "lee", password))[0] == 401
    assert (await sign_in(server, "lee", "a new passphrase"))[0] == 201


# -------------------------------------------------------------------------------------------- rate limit


async def test_failed_sign_ins_are_limited_per_account_on_every_node(server_factory: Factory) -> None:
    one, two = await server_factory(), await server_factory()
    password = await add_person(one, "mia", "viewer")
    for n in range(5):
        status, _, _ = await sign_in((one, two)[n % 2], "mia", f"guess-{n}")
        assert status == 401
    for server in (one, two):
        status, body, signed = await sign_in(server, "mia", password)
        assert (status, body["error"]["code"], signed) == (429, "too_many_attempts", None)
    other = await add_person(one, "ned", "viewer")
    assert (await sign_in(two, "ned", other))[0] == 201, "another account is not locked by mia's failures"


async def test_failed_sign_ins_are_limited_per_address(server_factory: Factory) -> None:
    server = await server_factory(sign_in_address_failures=3)
    password = await add_person(server, "olga", "viewer")
    for name in ("p1", "p2", "p3"):
        assert (await sign_in(server, name, "guess"))[0] == 401
    status, body, _ = await sign_in(server, "olga", password)
    assert status == 429 and body["error"]["code"] == "too_many_attempts"


async def test_a_successful_sign_in_clears_the_accounts_failures(server: RunningServer) -> None:
    password = await add_person(server, "pat", "viewer")
    for _ in range(4):
        assert (await sign_in(server, "pat", "guess"))[0] == 401
    assert (await sign_in(server, "pat", password))[0] == 201
    for _ in range(4):
        assert (await sign_in(server, "pat", "guess"))[0] == 401
    assert (await sign_in(server, "pat", password))[0] == 201


# ------------------------------------------------------------------------------------------ personal tokens


async def test_a_personal_token_carries_its_owners_role_and_is_revocable(server: RunningServer) -> None:
    viewer = await signed_in(server, "quinn", "viewer")
    status, created = await with_cookie(server, "POST", "/api/tokens", viewer, csrf=viewer.csrf,
                                        json={"name": "laptop"})
    assert status == 201 and created["secret"].startswith("pfusr_") and created["token"]["name"] == "laptop"
    secret = created["secret"]
    status, listed = await with_cookie(server, "GET", "/api/tokens", viewer)
    assert status == 200 and [t["name"] for t in listed] == ["laptop"] and secret not in str(listed)
    status, _ = await with_cookie(server, "POST", "/api/tokens", viewer, csrf=viewer.csrf, json={"name": "laptop"})
    assert status == 409

    status, me = await server.request("GET", "/api/session", token=secret)
    assert status == 200 and (me["name"], me["role"], me["csrf_token"]) == ("quinn", "viewer", None)
    assert (await server.request("GET", "/api/jobs", token=secret))[0] == 200
    status, _ = await server.request("POST", "/api/jobs", token=secret, json=open_url_job())
    assert status == 403, "a bearer request needs no CSRF token, but a viewer's token cannot create jobs"
    await server.ok("PATCH", "/api/users/quinn", {"role": "operator"})
    status, _ = await server.request("POST", "/api/jobs", token=secret, json=open_url_job())
    assert status == 201, "the token acts with its owner's role as it stands"

    status, _ = await server.request("DELETE", f"/api/tokens/{created['token']['id']}", token=secret)
    assert status == 204
    status, body = await server.request("GET", "/api/jobs", token=secret)
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_one_person_cannot_revoke_anothers_token_and_shared_admin_tokens_have_none(
        server: RunningServer) -> None:
    rex = await signed_in(server, "rex", "admin")
    sam = await signed_in(server, "sam", "viewer")
    status, created = await with_cookie(server, "POST", "/api/tokens", rex, csrf=rex.csrf, json={"name": "ci"})
    assert status == 201
    status, _ = await with_cookie(server, "DELETE", f"/api/tokens/{created['token']['id']}", sam, csrf=sam.csrf)
    assert status == 404
    assert (await server.request("GET", "/api/jobs", token=created["secret"]))[0] == 200
    status, body = await server.request("POST", "/api/tokens", json={"name": "x"})
    assert status == 403 and "no person" in body["error"]["message"]


# --------------------------------------------------------------------------------------------------- CLI


async def test_the_users_cli_adds_lists_changes_and_disables_people(server: RunningServer, dsn: str) -> None:
    added = await run_cli(dsn, "users", "add", "tess", "--role", "operator")
    assert added.returncode == 0, added.stderr
    password = added.stdout.strip()
    status, body, signed = await sign_in(server, "tess", password)
    assert status == 201 and signed is not None and body["role"] == "operator"

    listed = await run_cli(dsn, "users", "list")
    assert listed.returncode == 0 and password not in listed.stdout
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["tess"][1] == "operator"

    assert (await run_cli(dsn, "users", "set-role", "tess", "viewer")).returncode == 0
    status, _ = await with_cookie(server, "POST", "/api/jobs", signed, csrf=signed.csrf, json=open_url_job())
    assert status == 403
    assert (await run_cli(dsn, "users", "disable", "tess")).returncode == 0
    assert (await with_cookie(server, "GET", "/api/session", signed))[0] == 401
    listed = await run_cli(dsn, "users", "list")
    assert "disabled" in next(line for line in listed.stdout.splitlines() if line.startswith("tess"))

    for args, words in ((("users", "add", "tess"), ("exists",)), (("users", "set-role", "nobody", "admin"),
                                                                   ("nobody",)),
                        (("users", "add", "bad name!"), ("name",))):
        done = await run_cli(dsn, *args)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        for word in words:
            assert word in done.stderr, (word, done.stderr)
    role = await run_cli(dsn, "users", "add", "uma", "--role", "owner")
    assert role.returncode == 2 and "owner" in role.stderr


async def test_a_persons_changes_are_in_the_audit_trail_under_their_name(server: RunningServer) -> None:
    operator = await signed_in(server, "rita", "operator")
    status, job = await with_cookie(server, "POST", "/api/jobs", operator, csrf=operator.csrf, json=open_url_job())
    assert status == 201
    status, token = await with_cookie(server, "POST", "/api/tokens", operator, csrf=operator.csrf,
                                      json={"name": "ci"})
    assert status == 201
    await server.ok("PATCH", "/api/users/rita", {"role": "viewer"})
    page = await server.ok("GET", "/api/audit?actor_kind=person")
    mine = [(e["action"], e["object_id"], e["actor"]["name"]) for e in page["items"]]
    assert ("job.create", str(job["id"]), "rita") in mine
    assert ("personal_token.create", str(token["token"]["id"]), "rita") in mine
    changes = (await server.ok("GET", "/api/audit?action=person.update"))["items"]
    assert [(e["actor"]["name"], e["before"], e["after"]) for e in changes] == [
        ("env", {"role": "operator"}, {"role": "viewer"})]
