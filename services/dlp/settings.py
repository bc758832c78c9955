"""Where the DLP guard finds its policy and data files (env prefix ``STELLWERK_DLP_``).

Defaults point at the files shipped inside this package, so a bare install works offline.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).parent
DATA_DIR = PACKAGE_DIR / "data"


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
