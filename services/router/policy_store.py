"""Where the routing policy in force comes from: the policy directory, or a pushed policy
(``BundledPolicy``: whichever change came last wins); and the check a bundle must pass."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from services.runtime.rego import (
    BundledPolicy,
    CompiledPolicy,
    PolicyError,
    PolicySource,
    read_policy_dir,
    run_case_table,
)

ENTRYPOINT: Final = "stellwerk/routing/decision"
SHIPPED_POLICY_DIR: Final = Path(__file__).parent / "policies"


class RouterPolicy(BundledPolicy):
    def __init__(self, directory: Path, entrypoint: str = ENTRYPOINT, check_interval: float = 1.0) -> None:
        super().__init__(directory, entrypoint, check_interval)


def check_policy_dir(directory: Path, entrypoint: str = ENTRYPOINT) -> PolicySource:
    """Read a policy directory, compile it and run its ``*_test.json`` case tables.

    Raises PolicyError when it does not compile or any case fails, so a policy that fails
    its own tests never reaches a router.
    """
    source = read_policy_dir(directory)
    policy = CompiledPolicy(source, entrypoint)
    failures: list[str] = []
    for cases in sorted(directory.glob("*_test.json")):
        try:
            failures.extend(f"{cases.name}: {failure}" for failure in run_case_table(policy, cases))
        except (KeyError, TypeError, ValueError) as exc:
            # A malformed table, or a case for which the policy is undefined.
            raise PolicyError(f"case table {cases.name} could not run: {exc!r}") from exc
    if failures:
        raise PolicyError(f"{len(failures)} policy test(s) failed: " + "; ".join(failures))
    return source
