"""Supabase Auth JWTs: real tokens signed here (HS256 with the secret; ES256 and RS256 with keys made here,
published by a JWKS on a local HTTP endpoint), verified or refused with their reason."""

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
import socketio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from phonefleet.protocol import events as ev
from phonefleet.server import people
from phonefleet.server.auth import SUPABASE_ONLY
from phonefleet.server.supabase_auth import JwtRejected, SupabaseAuthConfig, SupabaseVerifier, looks_like_jwt
from tests.conftest import ADMIN, free_port, open_url_job

SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
ISSUER = "https://abcdefghijklmnop.supabase.co/auth/v1"
USER = "6f1c1f0e-4b9e-4a43-9d2f-4fd2f1a0c001"


def claims(**overrides: Any) -> dict[str, Any]:
    """What Supabase Auth puts in a signed-in user's access token."""
    now = int(time.time())
    values: dict[str, Any] = {"sub": USER, "email": "ada@example.com", "aud": "authenticated", "role": "authenticated",
                              "iss": ISSUER, "iat": now, "exp": now + 3600, "is_anonymous": False}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


class Keys:
    """An ES256 and an RS256 signing key, and the JWKS that publishes their public halves."""

    def __init__(self) -> None:
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published: list[dict[str, Any]] = [self.jwk("ec-1"), self.jwk("rsa-1")]
        self.served = 0

    def jwk(self, kid: str) -> dict[str, Any]:
        if kid.startswith("ec"):
            entry: dict[str, Any] = ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True)
            entry["alg"] = "ES256"
        else:
            entry = RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True)
            entry["alg"] = "RS256"
        return {**entry, "kid": kid, "use": "sig"}

    def sign(self, kid: str, payload: dict[str, Any]) -> str:
        if kid.startswith("ec"):
            return jwt.encode(payload, self.ec, algorithm="ES256", headers={"kid": kid})
        return jwt.encode(payload, self.rsa, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
async def jwks_url(keys: Keys) -> AsyncIterator[str]:
    """The project's ``/auth/v1/.well-known/jwks.json``, served from loopback, counting its fetches."""

    async def jwks(_request: web.Request) -> web.Response:
        keys.served += 1
        return web.json_response({"keys": keys.published})

    app = web.Application()
    app.router.add_get("/auth/v1/.well-known/jwks.json", jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/auth/v1/.well-known/jwks.json"
    await runner.cleanup()


@pytest.fixture
async def silent_url() -> AsyncIterator[str]:
    """A JWKS host that accepts the connection and never answers (a stalled network)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/auth/v1/.well-known/jwks.json"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def verifier(**config: Any) -> SupabaseVerifier:
    values: dict[str, Any] = {"jwt_secret": None, "jwks_url": None, "issuer": ISSUER}
    values.update(config)
    return SupabaseVerifier(SupabaseAuthConfig(**values))


async def refused(check: SupabaseVerifier, token: str) -> str:
    with pytest.raises(JwtRejected) as caught:
        await asyncio.wait_for(check.verify(token), timeout=30)  # a hang guard, not a timing assertion
    assert caught.value.status == 401
    return caught.value.reason


def unsigned(payload: dict[str, Any], header: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


async def test_a_few_seconds_of_clock_skew_are_allowed() -> None:
    now = int(time.time())
    skewed = jwt.encode(claims(iat=now + 2, nbf=now + 2, exp=now - 2), SECRET, algorithm="HS256")
    assert (await verifier(jwt_secret=SECRET).verify(skewed)).sub == USER


async def test_hs256_token_signed_with_the_secret_gives_its_claims() -> None:
    got = await verifier(jwt_secret=SECRET).verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert (got.sub, got.email, got.aud, got.role, got.iss) == (USER, "ada@example.com", "authenticated",
                                                                 "authenticated", ISSUER)
    assert got.exp.timestamp() > time.time()


@pytest.mark.parametrize("kid", ["ec-1", "rsa-1"])
async def test_es256_and_rs256_tokens_verify_against_the_jwks(keys: Keys, jwks_url: str, kid: str) -> None:
    check = verifier(jwks_url=jwks_url)
    got = await check.verify(keys.sign(kid, claims()))
    assert got.sub == USER
    await check.verify(keys.sign(kid, claims(email="other@example.com")))
    assert keys.served == 1, "the JWKS is fetched once, then cached"


@pytest.mark.parametrize(("token", "reason"), [
    (lambda: jwt.encode(claims(exp=int(time.time()) - 120), SECRET, algorithm="HS256"), "expired"),
    (lambda: jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256"), "not_yet_valid"),
    (lambda: jwt.encode(claims(aud="anon"), SECRET, algorithm="HS256"), "wrong_audience"),
    (lambda: jwt.encode(claims(aud=None), SECRET, algorithm="HS256"), "missing_claim"),
    (lambda: jwt.encode(claims(iss="https://evil.supabase.co/auth/v1"), SECRET, algorithm="HS256"), "wrong_issuer"),
    (lambda: jwt.encode(claims(), "another-secret-of-at-least-32-characters!!", algorithm="HS256"), "bad_signature"),
    (lambda: jwt.encode(claims(sub=None), SECRET, algorithm="HS256"), "missing_claim"),
    (lambda: jwt.encode(claims(is_anonymous=True), SECRET, algorithm="HS256"), "anonymous"),
    (lambda: jwt.encode(claims(), SECRET, algorithm="HS384"), "algorithm_not_allowed"),
    (lambda: unsigned(claims(), {"alg": "none", "typ": "JWT"}), "algorithm_not_allowed"),
    (lambda: "not.a.jwt", "malformed"),
])
async def test_hs256_tokens_that_must_not_pass_are_refused_with_their_reason(token: Callable[[], str],
                                                                              reason: str) -> None:
    assert await refused(verifier(jwt_secret=SECRET), token()) == reason


async def test_asymmetric_tokens_that_must_not_pass_are_refused_with_their_reason(keys: Keys, jwks_url: str) -> None:
    check = verifier(jwks_url=jwks_url)
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims(), other, algorithm="ES256", headers={"kid": "ec-1"})
    assert await refused(check, forged) == "bad_signature"
    assert await refused(check, keys.sign("ec-1", claims(exp=int(time.time()) - 120))) == "expired"
    assert await refused(check, keys.sign("rsa-1", claims(aud="service_role"))) == "wrong_audience"
    assert await refused(check, jwt.encode(claims(), keys.rsa, algorithm="RS256")) == "unknown_kid"
    # An RS256 header over the EC key's kid: the key decides the algorithm, not the token.
    confused = jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "ec-1"})
    assert await refused(check, confused) == "algorithm_not_allowed"
    # Without a secret configured, an HS256 token is refused, whatever it was signed with.
    assert await refused(check, jwt.encode(claims(), SECRET, algorithm="HS256")) == "algorithm_not_allowed"
    assert await refused(check, unsigned(claims(), {"alg": "none", "kid": "ec-1"})) == "algorithm_not_allowed"


async def test_unknown_kid_refetches_the_jwks_once_for_a_rotated_key(keys: Keys, jwks_url: str) -> None:
    check = verifier(jwks_url=jwks_url, jwks_min_refresh_sec=0.0)
    await check.verify(keys.sign("ec-1", claims()))
    keys.published = [keys.jwk("ec-2")]  # the project rotated its signing key
    assert (await check.verify(keys.sign("ec-2", claims()))).sub == USER
    assert keys.served == 2


async def test_unknown_kids_do_not_hammer_the_jwks(keys: Keys, jwks_url: str) -> None:
    check = verifier(jwks_url=jwks_url, jwks_min_refresh_sec=3600.0)
    await check.verify(keys.sign("ec-1", claims()))
    for n in range(5):
        assert await refused(check, keys.sign(f"ec-forged-{n}", claims())) == "unknown_kid"
    assert keys.served == 1, "within min_refresh_sec an unknown kid is refused without another fetch"


async def test_unreachable_jwks_is_a_401_not_a_hang(keys: Keys, silent_url: str) -> None:
    stalled = verifier(jwks_url=silent_url, jwks_timeout_sec=0.3)
    assert await refused(stalled, keys.sign("ec-1", claims())) == "jwks_unavailable"
    assert await refused(stalled, keys.sign("ec-1", claims())) == "jwks_unavailable"
    assert stalled.jwks is not None and stalled.jwks.fetches == 1, "the next tokens do not each wait out a fetch"
    closed = verifier(jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json", jwks_timeout_sec=0.3)
    assert await refused(closed, keys.sign("ec-1", claims())) == "jwks_unavailable"


def test_only_three_part_tokens_look_like_jwts(keys: Keys) -> None:
    assert looks_like_jwt(jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert looks_like_jwt(keys.sign("rsa-1", claims()))
    assert not looks_like_jwt(ADMIN)
    assert not looks_like_jwt("pfagt_abc")
    assert not looks_like_jwt("a.b")


async def test_server_answers_401_with_the_reason_and_keeps_its_own_tokens(server_factory: Any, keys: Keys,
                                                                           jwks_url: str) -> None:
    srv = await server_factory(supabase_jwt_secret=SECRET, supabase_jwks_url=jwks_url, supabase_jwt_issuer=ISSUER)
    expired = jwt.encode(claims(exp=int(time.time()) - 120), SECRET, algorithm="HS256")
    status, body = await srv.request("GET", "/api/jobs", token=expired)
    assert status == 401 and body["error"]["code"] == "unauthorized" and "expired" in body["error"]["message"]
    status, body = await srv.request("GET", "/api/jobs", token=keys.sign("ec-1", claims(aud="anon")))
    assert status == 401 and "wrong_audience" in body["error"]["message"]
    forged = jwt.encode(claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
                        headers={"kid": "rsa-1"})
    status, body = await srv.request("GET", "/api/jobs", token=forged)
    assert status == 401 and "bad_signature" in body["error"]["message"]
    # A verified user is a phonefleet person (a viewer at first), never an admin.
    assert (await srv.request("GET", "/api/jobs", token=keys.sign("rsa-1", claims())))[0] == 200
    status, _ = await srv.request("POST", "/api/jobs", json=open_url_job(), token=keys.sign("rsa-1", claims()))
    assert status == 403
    assert (await srv.request("GET", "/api/jobs"))[0] == 200, "the admin token still works beside Supabase Auth"


async def test_a_supabase_user_is_a_person_whose_role_is_phonefleets(server_factory: Any) -> None:
    """First sign-in makes a viewer named after the email (recorded in the audit trail); the user id finds them
    again, whatever the token says of roles; an admin's role change counts at once; a disabled person is refused;
    a person an admin gave an email is that user's from their first sign-in, and has no password of their own."""
    srv = await server_factory(supabase_jwt_secret=SECRET)
    token = jwt.encode(claims(role="service_role"), SECRET, algorithm="HS256")
    assert (await srv.request("GET", "/api/jobs", token=token))[0] == 200
    (ada,) = [p for p in await srv.ok("GET", "/api/users") if p["name"] == "ada"]
    assert ada["role"] == "viewer"
    assert (await srv.request("POST", "/api/jobs", json=open_url_job(), token=token))[0] == 403
    trail = (await srv.ok("GET", "/api/audit?action=person.create"))["items"]
    assert [(e["actor"]["kind"], e["after"]["name"]) for e in trail] == [("system", "ada")]

    await srv.ok("PATCH", "/api/users/ada", {"role": "operator"})
    assert (await srv.request("POST", "/api/jobs", json=open_url_job(), token=token))[0] == 201
    again = jwt.encode(claims(email="ada.renamed@example.com"), SECRET, algorithm="HS256")
    assert (await srv.request("POST", "/api/jobs", json=open_url_job(), token=again))[0] == 201, "found by user id"
    assert len(await srv.ok("GET", "/api/users")) == 1

    await srv.ok("PATCH", "/api/users/ada", {"disabled": True})
    status, body = await srv.request("GET", "/api/jobs", token=token)
    assert status == 401 and "disabled" in body["error"]["message"]

    await srv.ok("POST", "/api/users", {"name": "grace", "role": "admin"})
    async with srv.services.pool.acquire() as conn:
        await people.set_email(conn, "grace", "Grace@Example.com")  # `phonefleet-server users set-email`
    grace = jwt.encode(claims(sub="0f0e0d0c-0000-4000-8000-000000000002", email="grace@example.com"), SECRET,
                       algorithm="HS256")
    assert (await srv.request("POST", "/api/agents", json={"name": "pc-9"}, token=grace))[0] == 201, "an admin's email"
    assert {p["name"] for p in await srv.ok("GET", "/api/users")} == {"ada", "grace"}
    status, _ = await srv.request("POST", "/api/session", json={"name": "ada", "password": SUPABASE_ONLY}, token=None)
    assert status == 401, "a person a Supabase sign-in made has no password to sign in with"


async def test_without_supabase_settings_a_jwt_is_just_an_unknown_token(server: Any) -> None:
    status, body = await server.request("GET", "/api/jobs", token=jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert status == 401 and body["error"]["message"] == "unknown token"


OTHER_SECRET = "another project's secret, as long as a real one"


async def test_dashboard_socket_takes_a_supabase_users_token_and_refuses_a_bad_one(server_factory: Any) -> None:
    dotted = "admin.token.with-dots"
    srv = await server_factory(supabase_jwt_secret=SECRET, admin_token=dotted)
    assert (await srv.request("GET", "/api/jobs", token=dotted))[0] == 200, "the environment's token comes first"
    refused = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(srv.url, namespaces=[ev.DASHBOARD_NAMESPACE], transports=["websocket"],
                              wait_timeout=10,
                              auth={"token": jwt.encode(claims(), OTHER_SECRET, algorithm="HS256")})
    await refused.disconnect()
    assert srv.services.realtime.dashboards == set()
    viewer = socketio.AsyncClient(reconnection=False)
    await viewer.connect(srv.url, namespaces=[ev.DASHBOARD_NAMESPACE], transports=["websocket"], wait_timeout=10,
                         auth={"token": jwt.encode(claims(), SECRET, algorithm="HS256")})
    try:
        assert len(srv.services.realtime.dashboards) == 1, "a Supabase user's token is their person's"
    finally:
        await viewer.disconnect()
