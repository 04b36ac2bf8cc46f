"""Supabase Auth: a JWT that Supabase issued is verified here (HS256 with the project's secret, ES256/RS256
with the project's JWKS), giving its claims or the reason it is refused (every reason is a 401)."""

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from phonefleet.server.errors import Unauthorized

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
MAX_JWT_CHARS = 16_384
"""Far above any Supabase access token (about 1 kB), far below what would cost anything to look at."""

RejectReason = Literal["malformed", "algorithm_not_allowed", "bad_signature", "unknown_kid", "jwks_unavailable",
                       "expired", "not_yet_valid", "wrong_audience", "wrong_issuer", "missing_claim", "anonymous",
                       "not_configured", "no_person", "disabled"]


class JwtRejected(Unauthorized):
    """A Supabase token refused, with why (the 401's message; ``reason`` is a stable code for tests and logs)."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"supabase token refused ({reason}): {message}")
        self.reason: RejectReason = reason


class SupabaseClaims(BaseModel):
    """The verified claims phonefleet uses: who (``sub``, ``email``) and what Supabase says of the token."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sub: str = Field(min_length=1)
    email: str | None = None
    exp: datetime
    aud: str | list[str]
    role: str | None = None
    """Supabase's database role (``authenticated``), not a phonefleet role: those come from phonefleet's tables."""
    iss: str | None = None
    is_anonymous: bool = False


@dataclass(frozen=True, slots=True)
class SupabaseAuthConfig:
    jwt_secret: str | None
    jwks_url: str | None
    audience: str = "authenticated"
    issuer: str | None = None
    jwks_timeout_sec: float = 3.0
    jwks_min_refresh_sec: float = 30.0
    """An unknown ``kid`` refetches the JWKS at most this often, so forged kids cannot make us hammer it."""
    leeway_sec: float = 5.0
    """Clock skew allowed between the project and this server (exp, nbf, iat)."""

    @property
    def enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwks_url)


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated base64url parts; phonefleet's own tokens (``pfadm_``, ``pfagt_``) never have dots."""
    parts = token.split(".")
    return len(parts) == 3 and all(parts[:2]) and len(token) <= MAX_JWT_CHARS


class JwksCache:
    """The project's signing keys by ``kid``, fetched on first use and again when a token names an unknown
    ``kid`` (key rotation), never more often than ``min_refresh_sec``; every fetch is bounded by a timeout."""

    def __init__(self, url: str, *, timeout_sec: float, min_refresh_sec: float) -> None:
        self.url = url
        self.timeout_sec = timeout_sec
        self.min_refresh_sec = min_refresh_sec
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._failed = False
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str) -> jwt.PyJWK:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:  # one fetch for a burst of tokens naming the new kid
            if kid not in self._keys and self._may_refresh():
                await self._refresh()
        if kid in self._keys:
            return self._keys[kid]
        if self._failed:  # refused at once until the next fetch may be tried, not after a timeout each
            raise JwtRejected("jwks_unavailable", "the project's JWKS could not be fetched")
        raise JwtRejected("unknown_kid", f"no key {kid!r} in the project's JWKS")

    def _may_refresh(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= self.min_refresh_sec

    async def _refresh(self) -> None:
        self.fetches += 1
        self._fetched_at = time.monotonic()  # a failed fetch waits as long as a good one before the next
        self._failed = True
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_sec)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.url) as response:
                response.raise_for_status()
                document = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("supabase jwks unavailable", extra={"url": self.url, "error": repr(exc)})
            raise JwtRejected("jwks_unavailable", "the project's JWKS could not be fetched") from exc
        self._keys = _keys_of(document)
        self._failed = False


def _keys_of(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document (keys of other algorithms, or without ``kid``, skipped)."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document.get("keys", []) if isinstance(document, Mapping) else []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(dict(entry))
        except jwt.PyJWTError:
            continue
        if key.algorithm_name in ASYMMETRIC_ALGORITHMS:
            keys[entry["kid"]] = key
    return keys


class SupabaseVerifier:
    """Checks a Supabase access token: its algorithm (HS256 only with the secret, ES256/RS256 only with the
    JWKS, never ``none``), signature, expiry, audience and issuer."""

    def __init__(self, config: SupabaseAuthConfig) -> None:
        self.config = config
        self.jwks = (JwksCache(config.jwks_url, timeout_sec=config.jwks_timeout_sec,
                               min_refresh_sec=config.jwks_min_refresh_sec) if config.jwks_url else None)

    async def verify(self, token: str) -> SupabaseClaims:
        if not looks_like_jwt(token):
            raise JwtRejected("malformed", "not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise JwtRejected("malformed", "the JWT's header cannot be read") from exc
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.config.jwt_secret:
            key: Any = self.config.jwt_secret
        elif algorithm in ASYMMETRIC_ALGORITHMS and self.jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str):
                raise JwtRejected("unknown_kid", "the JWT names no key (kid)")
            jwk = await self.jwks.key(kid)
            if jwk.algorithm_name != algorithm:
                raise JwtRejected("algorithm_not_allowed", f"key {kid!r} is not an {algorithm} key")
            key = jwk.key
        else:
            raise JwtRejected("algorithm_not_allowed", f"algorithm {algorithm!r} is not accepted here")
        return self._decode(token, key, algorithm)

    def _decode(self, token: str, key: Any, algorithm: str) -> SupabaseClaims:
        try:
            payload = jwt.decode(token, key=key, algorithms=[algorithm], audience=self.config.audience,
                                 issuer=self.config.issuer, leeway=self.config.leeway_sec,
                                 options={"require": ["exp", "sub", "aud"]})
        except jwt.ExpiredSignatureError as exc:
            raise JwtRejected("expired", "the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise JwtRejected("not_yet_valid", "the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise JwtRejected("wrong_audience", f"the token is not for {self.config.audience!r}") from exc
        except jwt.InvalidIssuerError as exc:
            raise JwtRejected("wrong_issuer", f"the token was not issued by {self.config.issuer!r}") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise JwtRejected("missing_claim", f"the token has no {exc.claim!r} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise JwtRejected("bad_signature", "the token's signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise JwtRejected("malformed", str(exc)) from exc
        try:
            claims = SupabaseClaims.model_validate({**payload, "exp": datetime.fromtimestamp(payload["exp"], UTC)})
        except (ValidationError, TypeError, ValueError, OverflowError) as exc:
            raise JwtRejected("malformed", "the token's claims are not those of a Supabase user") from exc
        if claims.is_anonymous:
            raise JwtRejected("anonymous", "anonymous Supabase sign-ins are not people of this fleet")
        return claims
