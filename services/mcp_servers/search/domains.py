"""Domain allow- and deny-lists. A listed domain covers itself and every subdomain
(``bund.de`` covers ``www.bmi.bund.de``); the deny-list always wins."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit


def host_of(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.rstrip(".").lower() if host else None


def _covered(host: str, domains: frozenset[str]) -> bool:
    parts = host.split(".")
    return any(".".join(parts[i:]) in domains for i in range(len(parts)))


def _normalised(domains: Iterable[str]) -> frozenset[str]:
    return frozenset(d.strip().strip(".").lower() for d in domains if d.strip().strip("."))


@dataclass(frozen=True, slots=True)
class DomainRules:
    allow: frozenset[str]
    deny: frozenset[str]

    @classmethod
    def of(cls, allow: Iterable[str], deny: Iterable[str]) -> DomainRules:
        return cls(_normalised(allow), _normalised(deny))

    def permits(self, url: str) -> bool:
        """Only http(s) URLs with a host; fail closed on anything unparsable."""
        if not url.lower().startswith(("http://", "https://")):
            return False
        host = host_of(url)
        if host is None or _covered(host, self.deny):
            return False
        return not self.allow or _covered(host, self.allow)
