"""Where the DLP guard finds its policy and data files (env prefix ``STELLWERK_DLP_``).

Defaults point at the files shipped inside this package, so a bare install works offline.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).parent
DATA_DIR = PACKAGE_DIR / "data"


def _user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stellwerk" / "dlp-prefilter"


class DlpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STELLWERK_DLP_", extra="ignore")

    # Rego sensitivity policy: *.rego modules plus data.json (thresholds).
    policy_dir: Path = PACKAGE_DIR / "policies"
    # Guardrail policy (issue 16): injection, topics per use case, output moderation.
    guard_policy_dir: Path = PACKAGE_DIR / "guard_policies"
    # Organisation-specific identifiers (customer/employee numbers ...); re-read on reload().
    org_identifiers_file: Path = DATA_DIR / "org_identifiers.yaml"
    # Detection tuning: min scores per direction, allowlists, identifying types, operators.
    config_file: Path = DATA_DIR / "guard.yaml"
    # Medical vocabularies (ICD-10 categories, term lists) and name gazetteers.
    medical_dir: Path = DATA_DIR / "medical"
    names_dir: Path = DATA_DIR / "names"
    # Identifiers with checksums / issuing rules, matched separator- and case-insensitively.
    identifiers_file: Path = DATA_DIR / "identifiers.yaml"
    # Prompts and answers screened concurrently per worker (issue 12). Screening is CPU work on
    # one event loop, so more does not screen faster; it keeps the next message at hand while
    # a screened one waits for its publish to be acknowledged. 4 left the worker idle between
    # messages (measured: 16 served ~25 % more requests/s at 64 concurrent, with less CPU per
    # request); a bound it keeps, so a burst waits in JetStream, not in the worker.
    max_in_flight: int = 16
    # Skip pattern recognizers that cannot match a text (one Hyperscan scan decides, see
    # services/dlp/prefilter.py): about half of a screening's CPU. Findings are the same
    # either way; false runs every recognizer on every text.
    prefilter: bool = True
    # Where the compiled prefilter automaton is cached between starts (it takes ~10 s of CPU
    # to build); as trusted as the policy files. Empty: build it at every start.
    prefilter_cache_dir: Path | None = _user_cache_dir()

    @field_validator("prefilter_cache_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value
