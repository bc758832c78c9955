"""Bearer tokens of an OpenID Connect issuer (issue 14, docs/identity.md).

The issuer's discovery document and its JWKS are fetched once and cached (``jwks_cache_s``);
a token whose ``kid`` is not in the cached set makes the verifier fetch the set again — at
most once per ``jwks_min_refresh_s`` — so a key rotation at the provider is honoured without a
restart. A token must be signed with one of the configured asymmetric ``algorithms`` (never
``none`` or an HMAC: the public keys are public), name the configured ``issuer`` and one of the
``audience`` values, and be within ``exp`` / ``nbf`` (with ``leeway_s``).

Its claims are mapped to what an API key grants (``OidcConfig.claims``, ``defaults``,
``roles``, ``grants``): the result is an ``ApiKey`` whose ``key_id`` is ``oidc:<sub>``, so the
gateway's admission, rate limits and audit treat it like any key.

In the runtime, not the gateway: the gateway and the tool gateway (approver tokens) verify
the same tokens, and services do not import each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any, Final

import httpx
import jwt
from pydantic import ValidationError

from services.runtime.settings import ApiKey, OidcConfig

_IDENT: Final = re.compile(r"^[A-Za-z0-9_.:@/<>=+\-]{1,128}$")


class TokenRejected(Exception):
    """The token is not valid here; ``reason`` is a fixed code, safe to return to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityNotMapped(Exception):
    """A valid token whose claims do not give a tenant, business unit or role."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


class IdpUnavailable(Exception):
    """The issuer's discovery document or keys could not be fetched."""


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (three base64url parts), as opposed to an ``sk-…`` API key."""
    parts = token.split(".")
    return len(parts) == 3 and all(parts) and token.startswith("ey")


class OidcVerifier:
    def __init__(self, config: OidcConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_at: float | None = None
        self._jwks_uri: str | None = None
        self._lock = asyncio.Lock()

    async def _fetch(self, http: httpx.AsyncClient, url: str) -> dict[str, Any]:
        try:
            response = await http.get(url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            raise IdpUnavailable(type(exc).__name__) from exc
        if not isinstance(document, dict):
            raise IdpUnavailable("not_a_json_object")
        return document

    async def _refresh(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            if self._jwks_uri is None:
                metadata = await self._fetch(http, self.config.discovery())
                if metadata.get("issuer") != self.config.issuer:
                    raise IdpUnavailable("discovery_issuer_mismatch")
                uri = metadata.get("jwks_uri")
                if not isinstance(uri, str):
                    raise IdpUnavailable("no_jwks_uri")
                self._jwks_uri = uri
            document = await self._fetch(http, self._jwks_uri)
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []):
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWKError:
                continue  # a key type or algorithm this verifier does not use
            keys[str(entry.get("kid", ""))] = key
        self._keys, self._keys_at = keys, self.clock()

    async def _candidates(self, kid: str | None, miss: bool) -> list[jwt.PyJWK]:
        """The keys that may have signed a token: the one with its ``kid``, or every key for a
        token without one. The set is fetched again when stale, or after a miss (an unknown
        ``kid``, a signature no cached key verifies) at most once per ``jwks_min_refresh_s``."""
        async with self._lock:
            now = self.clock()
            age = None if self._keys_at is None else now - self._keys_at
            known = kid in self._keys if kid is not None else bool(self._keys)
            if age is None or age >= self.config.jwks_cache_s or (
                    (miss or not known) and age >= self.config.jwks_min_refresh_s):
                await self._refresh()
        if kid is not None:
            return [self._keys[kid]] if kid in self._keys else []
        return list(self._keys.values())

    def _decode(self, token: str, keys: list[jwt.PyJWK], algorithm: str) -> dict[str, Any]:
        if not keys:
            raise TokenRejected("unknown_key")
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, key=key.key, algorithms=[algorithm], audience=self.config.audience,
                    issuer=self.config.issuer, leeway=self.config.leeway_s,
                    options={"require": ["exp", "iss", "aud", self.config.claims.subject]},
                )
                return claims
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise TokenRejected("expired") from None
            except jwt.ImmatureSignatureError:
                raise TokenRejected("not_yet_valid") from None
            except jwt.InvalidAudienceError:
                raise TokenRejected("wrong_audience") from None
            except jwt.InvalidIssuerError:
                raise TokenRejected("wrong_issuer") from None
            except jwt.MissingRequiredClaimError:
                raise TokenRejected("missing_claim") from None
            except jwt.InvalidTokenError:
                raise TokenRejected("invalid") from None
        raise TokenRejected("bad_signature")

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims; TokenRejected or IdpUnavailable otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenRejected("malformed") from None
        algorithm = header.get("alg")
        if algorithm not in self.config.algorithms:
            raise TokenRejected("algorithm_not_allowed")
        kid = str(header["kid"]) if header.get("kid") else None
        try:
            return self._decode(token, await self._candidates(kid, miss=False), algorithm)
        except TokenRejected as exc:
            if exc.reason not in ("unknown_key", "bad_signature"):
                raise
        # Perhaps the provider rotated its keys: fetch them again (rate-limited) and retry once.
        return self._decode(token, await self._candidates(kid, miss=True), algorithm)

    def identity(self, claims: dict[str, Any]) -> ApiKey:
        """What the token's holder may do, as an API key would grant it."""
        names = self.config.claims
        subject = str(claims[names.subject])
        values: dict[str, Any] = {
            "key_id": "oidc:" + (subject if _IDENT.match("oidc:" + subject) else
                                 hashlib.sha256(subject.encode()).hexdigest()[:32]),
            "key_sha256": "0" * 64,  # no key: the token is the credential
            **self.config.grants,
        }
        for field, claim, target in (("tenant", names.tenant, "tenant"),
                                     ("business_unit", names.business_unit, "business_unit"),
                                     ("role", names.role, "user_role"), ("usecase", names.usecase, "usecase_class")):
            value = self._value(claims.get(claim) if claim else None, mapped=field == "role")
            value = value if value is not None else self.config.defaults.get(field)  # type: ignore[call-overload]
            if value is None:
                if field == "usecase":
                    continue
                raise IdentityNotMapped(field)
            if not _IDENT.match(value):
                raise IdentityNotMapped(field)
            values[target] = value
        try:
            return ApiKey.model_validate(values)
        except ValidationError as exc:
            raise IdentityNotMapped(str(exc.errors()[0]["loc"][0])) from None

    def _value(self, claim: Any, mapped: bool) -> str | None:
        candidates = claim if isinstance(claim, list) else [claim] if claim is not None else []
        strings = [str(c) for c in candidates if isinstance(c, str | int)]
        if mapped and self.config.roles:
            return next((self.config.roles[s] for s in strings if s in self.config.roles), None)
        return strings[0] if strings else None

    async def authenticate(self, token: str) -> tuple[ApiKey, dict[str, Any]]:
        claims = await self.claims(token)
        return self.identity(claims), claims
