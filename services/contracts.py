"""Every service's bus contract, in one place (a registry, not a service).

``stellwerk/nats_auth.py`` derives each service's NATS permissions from these, ``schemas/
export.py`` the AsyncAPI document and the contracts section of docs/architecture.md.
"""

from __future__ import annotations

from typing import Final

from schemas.contracts import ServiceContract
from services.audit.contract import CONTRACT as AUDIT
from services.dlp.contract import CONTRACT as DLP
from services.finops.contract import CONTRACT as FINOPS
from services.gateway.contract import CONTRACT as GATEWAY
from services.inference.contract import CONTRACT as INFERENCE
from services.router.contract import CONTRACT as ROUTER
from services.toolgateway.contract import CONTRACT as TOOLGATEWAY

CONTRACTS: Final[tuple[ServiceContract, ...]] = (GATEWAY, DLP, ROUTER, INFERENCE, FINOPS, AUDIT, TOOLGATEWAY)


def contract(name: str) -> ServiceContract:
    for found in CONTRACTS:
        if found.name == name:
            return found
    raise KeyError(name)
