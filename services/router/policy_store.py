"""Where the routing policy in force comes from: the policy directory, or a pushed policy.

``ReloadingPolicy`` alone would undo a push on its next file check, because the pushed
version differs from the directory's. ``RouterPolicy`` keeps a pushed policy in force
until the directory's content changes after the push: whichever change came last wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from services.runtime.rego import (
    CompiledPolicy,
    PolicyError,
    PolicySource,
    ReloadingPolicy,
    read_policy_dir,
    run_case_table,
)

ENTRYPOINT: Final = "stellwerk/routing/decision"
SHIPPED_POLICY_DIR: Final = Path(__file__).parent / "policies"


class RouterPolicy(ReloadingPolicy):
    def __init__(self, directory: Path, entrypoint: str = ENTRYPOINT, check_interval: float = 1.0) -> None:
        super().__init__(directory, entrypoint, check_interval)
        # Directory version at the moment of the last push; None while the directory rules.
        self._disk_version_at_push: str | None = None

    def replace(self, source: PolicySource) -> None:
        try:
            disk_version: str | None = read_policy_dir(self.directory).version
        except (PolicyError, OSError, ValueError):
            disk_version = None  # any later readable state of the directory counts as a change
        super().replace(source)  # raises PolicyError on a broken push; the old policy stays
        self._disk_version_at_push = disk_version
        self.last_error = None

    def reload(self) -> bool:
        if self._disk_version_at_push is not None:
            try:
                disk_version = read_policy_dir(self.directory).version
            except (PolicyError, OSError, ValueError) as exc:
                self.last_error = str(exc)
                return False
            if disk_version == self._disk_version_at_push:
                return False
            self._disk_version_at_push = None
        return super().reload()


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
