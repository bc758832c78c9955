"""Sign-in to the console with the platform's identity provider (issue 15, docs/console.md):
OpenID Connect authorization code with PKCE and a nonce. The issuer, its keys and the claim
mapping are the gateway's (``oidc``, services/runtime/oidc.py); the console is a client of its
own (``console_oidc``). State, PKCE verifier, nonce and the page to return to travel in a
short-lived signed cookie, so the console keeps no server-side state.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any, Final
from urllib.parse import urlencode

import httpx

from services.runtime.oidc import IdentityNotMapped, IdpUnavailable, OidcVerifier, TokenRejected
from services.runtime.settings import ConsoleOidcConfig, OidcConfig
from stellwerk.console.session import CONSOLE_ROLES, Operator

STATE_COOKIE: Final = "stellwerk_console_sso"
STATE_PURPOSE: Final = "sso-state"
STATE_TTL_S: Final = 600
CALLBACK: Final = "/console/login/oidc/callback"


class SsoRefused(Exception):
    """The sign-in did not succeed; the message is shown on the login page."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class ConsoleSso:
    def __init__(self, oidc: OidcConfig, client: ConsoleOidcConfig) -> None:
        self.client = client
        # An ID token's audience is the client it was issued to; the console needs no business
        # unit, so one is supplied where the token has none.
        defaults = {"business_unit": "console", **oidc.defaults}
        self.id_tokens = OidcVerifier(oidc.model_copy(update={"audience": [client.client_id], "defaults": defaults}))
        # Without an ID token, the access token as the gateway would accept it.
        self.access_tokens = OidcVerifier(oidc.model_copy(update={"defaults": defaults}))
        self.oidc = oidc
        self._metadata: dict[str, Any] | None = None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            try:
                async with httpx.AsyncClient(timeout=5.0) as http:
                    response = await http.get(self.oidc.discovery())
                    response.raise_for_status()
                    document = response.json()
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                raise SsoRefused("The identity provider cannot be reached; try again or use an operator key.") from exc
            if not isinstance(document, dict) or document.get("issuer") != self.oidc.issuer or not all(
                    isinstance(document.get(k), str) for k in ("authorization_endpoint", "token_endpoint")):
                raise SsoRefused("The identity provider's discovery document does not match the configured issuer.")
            self._metadata = document
        return self._metadata

    def redirect_uri(self, base_url: str) -> str:
        return (self.client.redirect_base_url or base_url).rstrip("/") + CALLBACK

    async def start(self, redirect_uri: str, next_page: str) -> tuple[str, dict[str, str]]:
        """The authorization URL to send the browser to, and what the state cookie keeps."""
        metadata = await self.metadata()
        state, verifier, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(48), secrets.token_urlsafe(24)
        query = urlencode({
            "response_type": "code", "client_id": self.client.client_id, "redirect_uri": redirect_uri,
            "scope": " ".join(self.client.scopes), "state": state, "nonce": nonce,
            "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()), "code_challenge_method": "S256",
        })
        endpoint: str = metadata["authorization_endpoint"]
        url = endpoint + ("&" if "?" in endpoint else "?") + query
        return url, {"state": state, "verifier": verifier, "nonce": nonce, "next": next_page}

    async def finish(self, code: str, kept: dict[str, str], redirect_uri: str) -> Operator:
        metadata = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.client.client_id, "code_verifier": kept["verifier"]}
        secret = self.client.secret()  # by reference, resolved here: only the console needs it
        if secret is not None:
            form["client_secret"] = secret
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                response = await http.post(metadata["token_endpoint"], data=form,
                                           headers={"Accept": "application/json"})
            tokens = response.json()
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            raise SsoRefused("The identity provider cannot be reached; try again or use an operator key.") from exc
        if response.status_code != 200 or not isinstance(tokens, dict):
            raise SsoRefused("The identity provider did not issue a token for this sign-in.")
        try:
            if isinstance(tokens.get("id_token"), str):
                claims = await self.id_tokens.claims(tokens["id_token"])
                # The nonce binds the token to this sign-in (no replayed token); checked unless
                # the provider says it does not put one in its tokens.
                checked = "nonce" in claims or "nonce" in metadata.get("claims_supported", ["nonce"])
                if checked and claims.get("nonce") != kept["nonce"]:
                    raise TokenRejected("nonce_mismatch")
                identity = self.id_tokens.identity(claims)
                credential = tokens["id_token"]
            elif isinstance(tokens.get("access_token"), str):
                identity = self.access_tokens.identity(await self.access_tokens.claims(tokens["access_token"]))
                credential = tokens["access_token"]
            else:
                raise SsoRefused("The identity provider did not issue a token for this sign-in.")
        except TokenRejected as exc:
            raise SsoRefused(f"The identity provider's token was refused ({exc.reason}).") from None
        except IdentityNotMapped as exc:
            raise SsoRefused(f"Your account's {exc.field} is not mapped to the platform; ask an operator.") from None
        except IdpUnavailable:
            raise SsoRefused("The identity provider cannot be reached; try again or use an operator key.") from None
        if identity.user_role not in CONSOLE_ROLES:
            raise SsoRefused("Your account does not open the console (it needs an operator, approver, dpo or "
                             "budget_owner role).")
        # The token goes with the person's approval decisions (issue 14): the tool gateway verifies
        # it (it accepts the console's audience) and records the identity it proves.
        return Operator(key_id=identity.key_id, role=identity.user_role, tenant=identity.tenant, credential=credential)
