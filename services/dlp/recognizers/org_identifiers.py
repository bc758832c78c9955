"""Organisation-specific identifiers (customer, employee, project numbers) from a data file.

The file is YAML; adding an identifier needs no code change and takes effect on reload.
A matching value whose checksum (if named) fails is dropped; one that passes scores 1.0.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import yaml
from presidio_analyzer import Pattern, PatternRecognizer

from services.dlp.recognizers.checksums import CHECKSUMS


class IdentifierPattern(msgspec.Struct, forbid_unknown_fields=True):
    regex: str
    score: float = 0.5
    name: str = ""


class OrgIdentifier(msgspec.Struct, forbid_unknown_fields=True):
    entity: str
    patterns: list[IdentifierPattern]
    context: list[str] = msgspec.field(default_factory=list)
    checksum: str | None = None
    languages: list[str] = msgspec.field(default_factory=lambda: ["de", "en"])
    description: str = ""


class OrgIdentifierFile(msgspec.Struct, forbid_unknown_fields=True):
    identifiers: list[OrgIdentifier] = msgspec.field(default_factory=list)


class OrgIdentifierError(ValueError):
    """The identifier file is malformed (bad YAML, unknown checksum, invalid regex)."""


_ENTITY_NAME = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")


def load_org_identifiers(path: Path) -> list[OrgIdentifier]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        spec = msgspec.convert(raw, OrgIdentifierFile)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise OrgIdentifierError(f"{path.name}: {exc}") from exc
    for ident in spec.identifiers:
        if not _ENTITY_NAME.match(ident.entity):
            raise OrgIdentifierError(f"entity name {ident.entity!r} must be UPPER_SNAKE")
        if ident.checksum is not None and ident.checksum not in CHECKSUMS:
            raise OrgIdentifierError(f"{ident.entity}: unknown checksum {ident.checksum!r}")
        for pattern in ident.patterns:
            try:
                re.compile(pattern.regex)
            except re.error as exc:
                raise OrgIdentifierError(f"{ident.entity}: bad regex: {exc}") from exc
    return spec.identifiers


class OrgIdentifierRecognizer(PatternRecognizer):
    def __init__(self, ident: OrgIdentifier, language: str) -> None:
        self._checksum = CHECKSUMS[ident.checksum] if ident.checksum else None
        super().__init__(
            supported_entity=ident.entity,
            name=f"org:{ident.entity}",
            supported_language=language,
            patterns=[
                Pattern(p.name or f"{ident.entity}#{i}", p.regex, p.score)
                for i, p in enumerate(ident.patterns)
            ],
            context=ident.context,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        # None keeps the pattern's score; True lifts it to 1.0; False drops the match.
        return None if self._checksum is None else self._checksum(pattern_text)


def org_recognizers(identifiers: list[OrgIdentifier], language: str) -> list[PatternRecognizer]:
    return [OrgIdentifierRecognizer(i, language) for i in identifiers if language in i.languages]
