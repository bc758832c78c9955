"""The Rego sensitivity policy: features in, action / rule id / derived sensitivity out.

No decision logic here: this module only shapes the policy input and checks the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast, get_args

from schemas.vocabulary import DataSensitivity, DlpAction
from services.runtime.rego import BundledPolicy, PolicyError, PolicySource

ENTRYPOINT: Final = "stellwerk/dlp/decision"


@dataclass(frozen=True, slots=True)
class PolicyFeatures:
    direction: str
    usecase_class: str
    tenant: str
    business_unit: str
    user_role: str
    has_pii: bool
    pii_types: list[str]
    pii_confidence: float
    quasi_identifier_types: list[str]
    confidential_types: list[str]
    entity_types: list[str]
    has_medical_terms: bool
    medical_term_count: int
    medical_term_density: float
    medical_categories: list[str]
    pseudonym_types: list[str]

    def as_input(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    action: DlpAction
    rule_id: str
    derived_sensitivity: DataSensitivity
    policy_version: str


class SensitivityPolicy:
    """Compiled once; ``reload()`` recompiles when the directory's content hash changed;
    ``replace()`` installs a bundle from KV ``policies`` (whichever change came last wins).

    A broken edit keeps the last good version in force (``last_error`` says why); a policy
    that cannot be compiled at start-up raises PolicyError.
    """

    def __init__(self, directory: Path) -> None:
        # No time-based re-check in the request path: reload() is explicit.
        self._policy = BundledPolicy(directory, ENTRYPOINT, check_interval=float("inf"))

    @property
    def version(self) -> str:
        return self._policy.current().version

    @property
    def last_error(self) -> str | None:
        return self._policy.last_error

    @property
    def data(self) -> dict[str, Any]:
        return self._policy.current().data

    def reload(self) -> bool:
        return self._policy.reload()

    def replace(self, source: PolicySource) -> None:
        """Install a pushed bundle; raises PolicyError if it does not compile (the old stays)."""
        self._policy.replace(source)

    def decide(self, features: PolicyFeatures) -> PolicyDecision:
        policy = self._policy.current()
        out = policy.evaluate(features.as_input())
        action, rule_id, sensitivity = (
            out.get("action"), out.get("rule_id"), out.get("derived_sensitivity")
        )
        if action not in get_args(DlpAction) or sensitivity not in get_args(DataSensitivity):
            raise PolicyError("policy returned an unknown action or sensitivity")
        if not isinstance(rule_id, str) or not rule_id:
            raise PolicyError("policy returned no rule_id")
        return PolicyDecision(cast(DlpAction, action), rule_id,
                              cast(DataSensitivity, sensitivity), policy.version)
