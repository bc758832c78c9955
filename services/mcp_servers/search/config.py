"""Settings of the search server: where SearXNG is, and the rules per use case."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CONFIG: Final = Path(__file__).parent / "search.yaml"


class UsecaseRules(BaseModel):
    allow_domains: list[str] = Field(default_factory=list)
    deny_domains: list[str] = Field(default_factory=list)
    retention_days: float = Field(default=0.0, ge=0)


class SearchConfig(BaseModel):
    searxng_url: str = "http://127.0.0.1:8888"
    timeout_s: float = Field(default=10.0, gt=0)
    max_results: int = Field(default=10, ge=1, le=50)
    deny_domains: list[str] = Field(default_factory=list)
    usecases: dict[str, UsecaseRules] = Field(default_factory=dict)

    def rules_for(self, usecase: str) -> UsecaseRules:
        """An unknown use case gets the ``default`` rules (none: only the global deny-list)."""
        return self.usecases.get(usecase) or self.usecases.get("default") or UsecaseRules()


class SearchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STELLWERK_SEARCH_", extra="ignore")

    config_file: Path = DEFAULT_CONFIG
    searxng_url: str | None = None  # overrides the file's
    retention_db: Path = Path(".stellwerk/search_retention.db")

    def load(self) -> SearchConfig:
        config = SearchConfig.model_validate(yaml.safe_load(self.config_file.read_text()) or {})
        if self.searxng_url:
            config = config.model_copy(update={"searxng_url": self.searxng_url})
        return config
