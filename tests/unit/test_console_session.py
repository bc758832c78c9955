"""The console's session cookie (issue 14): the sign-in's credential travels sealed in it, so
the console can send it with approval decisions without keeping it anywhere else; only
approvers decide."""

from __future__ import annotations

import base64
import json

from stellwerk.console.session import Operator, Sessions

KEY = "sk-stellwerk-Quokka-approver-4711"


def test_the_credential_is_sealed_in_the_cookie_and_comes_back() -> None:
    sessions = Sessions(b"a-console-secret")
    cookie = sessions.issue(Operator(key_id="claims-approver", role="approver", tenant="acme", credential=KEY))
    assert KEY not in cookie and KEY not in base64.urlsafe_b64decode(cookie.rsplit(".", 1)[0]).decode()
    operator = sessions.read(cookie)
    assert operator is not None and (operator.key_id, operator.credential) == ("claims-approver", KEY)
    assert KEY not in repr(operator)
    # Another console secret (another deployment) cannot open it, and no session without one.
    assert Sessions(b"another-secret").read(cookie) is None
    plain = sessions.read(sessions.issue(Operator(key_id="dpo-1", role="dpo", tenant="acme")))
    assert plain is not None and plain.credential is None


def test_a_tampered_seal_yields_no_credential() -> None:
    sessions = Sessions(b"a-console-secret")
    cookie = sessions.issue(Operator(key_id="claims-approver", role="approver", tenant="acme", credential=KEY))
    payload = json.loads(base64.urlsafe_b64decode(cookie.rsplit(".", 1)[0]))
    payload["c"] = payload["c"][:-4] + "AAAA"
    raw = json.dumps(payload).encode()
    # Even a cookie correctly signed (the HMAC) with an altered seal yields the identity only.
    operator = sessions.read(base64.urlsafe_b64encode(raw).decode() + "." + sessions._sign(raw))
    assert operator is not None and operator.credential is None


def test_only_approvers_decide() -> None:
    assert Operator(key_id="a", role="approver", tenant="t").may("decide")
    assert not Operator(key_id="o", role="operator", tenant="t").may("decide")  # sees approvals, cannot decide
    assert Operator(key_id="o", role="operator", tenant="t").may("approvals")


def test_the_tool_gateway_accepts_the_consoles_tokens_for_decisions() -> None:
    """A person signed in to the console by SSO decides with the token of that sign-in: its
    audience is the console's client id, and it need not carry a business unit."""
    from services.runtime.settings import ConsoleOidcConfig, OidcConfig, PlatformConfig
    from services.toolgateway.approvers import approver_tokens

    base = PlatformConfig.model_validate({"api_keys": [], "deployments": []})
    assert approver_tokens(base) is None  # no issuer: keys only
    oidc = OidcConfig(issuer="https://idp.example", audience=["stellwerk-gateway"])
    verifier = approver_tokens(base.model_copy(update={
        "oidc": oidc, "console_oidc": ConsoleOidcConfig(client_id="stellwerk-console")}))
    assert verifier is not None
    assert verifier.config.audience == ["stellwerk-gateway", "stellwerk-console"]
    assert verifier.config.defaults["business_unit"] == "console"
    assert oidc.audience == ["stellwerk-gateway"]  # the gateway's own setting is left alone
