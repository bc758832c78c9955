"""Who may decide a critical tool call (issue 14, docs/identity.md): four eyes with identities.

A decision carries a credential — an API key of the ``keys`` bucket (watched, so a revoked
operator key stops working at once) or a bearer token of the configured OIDC issuer. The
identity it proves must have the approver role (``tool_approvals.approver_role``), belong to
the call's tenant, and be neither the human the agent acts for nor the agent itself. The
decision then records that identity (a key's lineage — the first key id of its rotation chain,
so a rotated key is the same approver — or ``oidc:<sub>``) as its approver, whatever name the
client typed.
"""

from __future__ import annotations

from collections.abc import Callable

from services.runtime.keys import KeyRing
from services.runtime.oidc import (
    IdentityNotMapped,
    IdpUnavailable,
    OidcVerifier,
    TokenRejected,
    looks_like_jwt,
)
from services.runtime.settings import ApiKey, PlatformConfig
from services.toolgateway.approvals import ApprovalRecord, Rejection
from services.toolgateway.settings import ToolApprovals


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

    def person(self, identity: ApiKey) -> str:
        """The approver as four eyes counts and records them: a key's lineage (its rotated
        successor is the same person), a token's ``oidc:<sub>``."""
        return self.keyring.person_of(identity.key_id)


def may_decide(identity: ApiKey, record: ApprovalRecord, role: str,
               person_of: Callable[[str], str] = lambda key_id: key_id) -> Rejection | None:
    """Approver role, the call's tenant, and not the requester (the agent or its human).
    ``person_of`` maps a key id to its rotation chain (``KeyRing.person_of``): a requester
    whose key was rotated is still the requester, whichever of its keys either side uses."""
    if identity.user_role != role:
        return Rejection("not_an_approver")
    call = record.request
    if identity.tenant != call.tenant:
        return Rejection("wrong_tenant")
    requesters = {i for i in (call.user_id, call.agent_id) if i}
    if {identity.key_id, person_of(identity.key_id)} & (requesters | {person_of(i) for i in requesters}):
        return Rejection("self_approval")
    return None
