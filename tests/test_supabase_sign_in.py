"""A Supabase app signs its user in to the dashboard by posting their access token to ``POST /api/session``: the
same HttpOnly session cookie and CSRF token as a password sign-in, refused with the token's reason; and an admin
gives a person the email their first Supabase sign-in is matched by (``PATCH /api/users/{name}``)."""

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from phonefleet.server.auth import SESSION_COOKIE
from tests.conftest import RunningServer, open_url_job
from tests.test_people import Signed, add_person, with_cookie
from tests.test_supabase_auth import SECRET, Keys, claims


async def supabase_sign_in(server: RunningServer, body: dict[str, Any]) -> tuple[int, Any, Signed | None]:
    async with server.session.post(server.url + "/api/session", json=body) as r:
        answer = await r.json()
        set_cookie = r.headers.get("Set-Cookie")
        if r.status != 201 or set_cookie is None:
            assert set_cookie is None, "a refused sign-in sets no cookie"
            return r.status, answer, None
        return r.status, answer, Signed(r.cookies[SESSION_COOKIE].value, answer["csrf_token"], set_cookie, answer)


def token(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


async def test_a_supabase_token_opens_the_same_session_a_password_does(server_factory: Any) -> None:
    srv = await server_factory(supabase_jwt_secret=SECRET)
    status, body, signed = await supabase_sign_in(srv, {"supabase_token": token()})
    assert status == 201 and signed is not None, body
    assert body["person"]["name"] == "ada" and body["role"] == "viewer" and body["csrf_token"]
    flags = [part.strip().lower() for part in signed.set_cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags
    status, me = await with_cookie(srv, "GET", "/api/session", signed)
    assert status == 200 and me["person"]["name"] == "ada" and me["csrf_token"] == signed.csrf
    await srv.ok("PATCH", "/api/users/ada", {"role": "operator"})
    status, _ = await with_cookie(srv, "POST", "/api/jobs", signed, json=open_url_job())
    assert status == 403, "a change through the cookie needs the CSRF token, as after a password sign-in"
    status, _ = await with_cookie(srv, "POST", "/api/jobs", signed, csrf=signed.csrf, json=open_url_job())
    assert status == 201
    status, _ = await with_cookie(srv, "DELETE", "/api/session", signed, csrf=signed.csrf)
    assert status == 204
    assert (await with_cookie(srv, "GET", "/api/session", signed))[0] == 401
    again = await supabase_sign_in(srv, {"supabase_token": token(email="other@example.com")})
    assert again[0] == 201 and again[1]["person"]["name"] == "ada", "found again by the user id, not made twice"


async def test_a_refused_token_is_a_401_with_its_reason(server_factory: Any) -> None:
    keys = Keys()
    srv = await server_factory(supabase_jwt_secret=SECRET)
    forged = jwt.encode(claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
                        headers={"kid": "rsa-1"})
    for bad, reason in ((token(exp=int(time.time()) - 120), "expired"), (token(aud="anon"), "wrong_audience"),
                        (jwt.encode(claims(), "another project's secret, long enough", algorithm="HS256"),
                         "bad_signature"),
                        (forged, "algorithm_not_allowed"), (keys.sign("ec-1", claims()), "algorithm_not_allowed"),
                        ("not-a-jwt", "malformed")):
        status, body, _ = await supabase_sign_in(srv, {"supabase_token": bad})
        assert status == 401 and body["error"]["code"] == "unauthorized", (reason, body)
        assert f"({reason})" in body["error"]["message"], (reason, body)
    assert (await supabase_sign_in(srv, {"supabase_token": token()}))[0] == 201
    await srv.ok("PATCH", "/api/users/ada", {"disabled": True})
    status, body, _ = await supabase_sign_in(srv, {"supabase_token": token()})
    assert status == 401 and "(disabled)" in body["error"]["message"]


async def test_a_password_or_a_token_one_or_the_other(server_factory: Any) -> None:
    srv = await server_factory(supabase_jwt_secret=SECRET)
    password = await add_person(srv, "pat", "viewer")
    for body, field in (({"name": "pat", "password": password, "supabase_token": token()}, "supabase_token"),
                        ({"password": "x", "supabase_token": token()}, "supabase_token"),
                        ({}, "name"), ({"name": "pat"}, "password"), ({"password": password}, "name"),
                        ({"supabase_token": ""}, "supabase_token")):
        status, answer, _ = await supabase_sign_in(srv, body)
        assert status == 422 and answer["error"]["details"][0]["field"] == field, (body, answer)
    assert (await supabase_sign_in(srv, {"name": "pat", "password": password}))[0] == 201


async def test_without_supabase_auth_a_token_sign_in_is_a_422_naming_it(server: RunningServer) -> None:
    status, body, _ = await supabase_sign_in(server, {"supabase_token": token()})
    assert status == 422 and body["error"]["details"][0]["field"] == "supabase_token"
    assert "not configured" in body["error"]["message"]


async def test_an_admin_gives_a_person_the_email_their_supabase_sign_in_is_matched_by(server_factory: Any) -> None:
    srv = await server_factory(supabase_jwt_secret=SECRET)
    await add_person(srv, "grace", "operator")
    await add_person(srv, "hopper", "viewer")
    person = await srv.ok("PATCH", "/api/users/grace", {"email": "Grace@Example.com"})
    assert person["email"] == "Grace@Example.com" and person["role"] == "operator"
    assert (await srv.ok("PATCH", "/api/users/grace", {"role": "admin"}))["email"] == "Grace@Example.com", \
        "left out, the email stays"
    status, body = await srv.request("PATCH", "/api/users/hopper", json={"email": "grace@example.com"})
    assert status == 409 and "grace@example.com" in body["error"]["message"], "emails are unique whatever the case"
    status, body = await srv.request("PATCH", "/api/users/hopper", json={"email": "not an email"})
    assert status == 422 and body["error"]["details"][0]["field"] == "email"
    assert (await srv.ok("PATCH", "/api/users/hopper", {"email": None}))["email"] is None

    trail = (await srv.ok("GET", "/api/audit?action=person.update"))["items"]
    assert {"email": "Grace@Example.com"} in [e["after"] for e in trail]
    status, body, _ = await supabase_sign_in(srv, {"supabase_token": token(sub="u-grace", email="grace@example.com")})
    assert status == 201 and body["person"]["name"] == "grace" and body["role"] == "admin", body
    # cleared, the email no longer matches; the Supabase user already linked stays grace
    await srv.ok("PATCH", "/api/users/grace", {"email": None})
    status, body, _ = await supabase_sign_in(srv, {"supabase_token": token(sub="u-grace", email="grace@example.com")})
    assert status == 201 and body["person"]["name"] == "grace"
    status, body, _ = await supabase_sign_in(srv, {"supabase_token": token(sub="u-new", email="grace@example.com")})
    assert status == 201 and body["person"]["name"] != "grace" and body["role"] == "viewer"
