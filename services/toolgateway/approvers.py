"""Who may decide a critical tool call (issue 14, docs/identity.md): four eyes with identities.

A decision carries a credential — an API key of the ``keys`` bucket (watched, so a revoked
operator key stops working at once) or a bearer token of the configured OIDC issuer. The
identity it proves must have the approver role (``tool_approvals.approver_role``), belong to
the call's tenant, and be neither the human the agent acts for nor the agent itself. The
decision then records that identity (``key_id`` or ``oidc:<sub>``) as its approver, whatever
name the client typed.
"""

from __future__ import annotations

from services.runtime.keys import KeyRing
from services.runtime.oidc import (
    IdentityNotMapped,
    IdpUnavailable,
    OidcVerifier,
    TokenRejected,
    looks_like_jwt,
)
from services.runtime.settings import ApiKey, PlatformConfig, ToolApprovals
from services.toolgateway.approvals import ApprovalRecord, Rejection


def approver_tokens(config: PlatformConfig) -> OidcVerifier | None:
    """The issuer's tokens as the gateway accepts them, and also those it issued to the console
    (audience: the console's client id): a person signed in to the console decides with the
    token of that sign-in."""
    if config.oidc is None:
        return None
    audience = list(config.oidc.audience)
    if config.console_oidc is not None and config.console_oidc.client_id not in audience:
        audience.append(config.console_oidc.client_id)
    # Deciding needs no business unit; the console supplies the same default at sign-in.
    defaults = {"business_unit": "console", **config.oidc.defaults}
    return OidcVerifier(config.oidc.model_copy(update={"audience": audience, "defaults": defaults}))


class Approvers:
    def __init__(self, keyring: KeyRing, oidc: OidcVerifier | None, rules: ToolApprovals) -> None:
        self.keyring = keyring
        self.oidc = oidc
        self.rules = rules

    async def identify(self, credential: str | None) -> ApiKey | Rejection:
        if not credential:
            return Rejection("identity_required")
        if self.oidc is not None and looks_like_jwt(credential):
            try:
                identity, _ = await self.oidc.authenticate(credential)
            except (TokenRejected, IdentityNotMapped):
                return Rejection("invalid_credential")
            except IdpUnavailable:
                return Rejection("identity_unavailable")
            return identity
        found = self.keyring.lookup(credential)
        return found if found is not None else Rejection("invalid_credential")


def may_decide(identity: ApiKey, record: ApprovalRecord, role: str) -> Rejection | None:
    """Approver role, the call's tenant, and not the requester (the agent or its human)."""
    if identity.user_role != role:
        return Rejection("not_an_approver")
    call = record.request
    if identity.tenant != call.tenant:
        return Rejection("wrong_tenant")
    if identity.key_id in {call.user_id, call.agent_id}:
        return Rejection("self_approval")
    return None
