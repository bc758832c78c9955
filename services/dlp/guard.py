"""The DLP guard's functional core: detect features, ask the policy, redact. Pure and sync.

All texts of one request (or the answer) are screened together: features are aggregated
over every text, so a name in one message and a diagnosis in another still block; there is
one policy decision, and its redaction is applied to every text.

Nothing here logs or returns a detected value except inside redacted texts (placeholders)
and the per-request pseudonym mapping.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog
from presidio_analyzer import EntityRecognizer, RecognizerResult

from schemas.events import DlpDecision, EntityCount
from schemas.vocabulary import Direction, UsecaseClass
from services.dlp.config import CompiledAllowlist, GuardConfig, load_guard_config
from services.dlp.detection import EntityDetector
from services.dlp.language import detect_language
from services.dlp.medical import MedicalLexicon, MedicalScan
from services.dlp.normalize import normalize
from services.dlp.policy import PolicyFeatures, SensitivityPolicy
from services.dlp.prefilter import PatternPrefilter
from services.dlp.recognizers.address import StreetAddressRecognizer
from services.dlp.recognizers.identifiers import identifier_recognizers
from services.dlp.recognizers.org_identifiers import (
    OrgIdentifier,
    OrgIdentifierError,
    load_org_identifiers,
)
from services.dlp.recognizers.person import NameLists, PersonGazetteerRecognizer
from services.dlp.recognizers.phone import PhoneNumberRecognizer
from services.dlp.redaction import Redactor, Span, pseudonym_types, restore_pseudonyms
from services.dlp.settings import DlpSettings
from services.runtime.rego import PolicySource

__all__ = [
    "DlpGuard",
    "DlpSettings",
    "DlpUnavailable",
    "Finding",
    "PolicyContext",
    "Screening",
    "restore_pseudonyms",
]

log = structlog.get_logger("stellwerk.dlp")
_DENSITY_DIGITS: Final = 4


class DlpUnavailable(RuntimeError):
    """The guard could not screen (engine or policy failure). Callers must fail closed."""


@dataclass(frozen=True, slots=True)
class PolicyContext:
    usecase_class: UsecaseClass
    tenant: str
    business_unit: str
    user_role: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected entity: where it is and how sure, never its value."""

    type: str
    start: int
    end: int
    score: float
    text_index: int


@dataclass(slots=True)
class Screening:
    decision: DlpDecision
    # Original texts for allow, redacted for redact, None for block. Not in repr(): a
    # Screening that ends up in a log line or a test failure must not show content.
    texts: list[str] | None = field(repr=False)
    findings: list[Finding]
    # Placeholder → original value; only filled when pseudonymisation was asked for.
    pseudonyms: dict[str, str] = field(default_factory=dict, repr=False)
    medical_categories: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)


def _has_context(result: RecognizerResult) -> bool:
    metadata = result.recognition_metadata or {}
    return bool(metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY))


def _resolve_overlaps(results: Sequence[RecognizerResult]) -> list[RecognizerResult]:
    """Keep the strongest of overlapping findings: an address contains a postcode, an e-mail
    contains a domain; each span should be counted and redacted once. Ties go to the finding
    a context word supports (ID card and passport numbers share one format), then to the
    longer one."""
    kept: list[RecognizerResult] = []
    ranked = sorted(
        results, key=lambda r: (-r.score, not _has_context(r), -(r.end - r.start), r.start)
    )
    for result in ranked:
        if all(result.end <= k.start or result.start >= k.end for k in kept):
            kept.append(result)
    kept.sort(key=lambda r: r.start)
    return kept


class DlpGuard:
    def __init__(
        self,
        settings: DlpSettings,
        config: GuardConfig,
        detector: EntityDetector,
        medical: MedicalLexicon,
        policy: SensitivityPolicy,
    ) -> None:
        self.settings = settings
        self.config = config
        self._detector = detector
        self._medical = medical
        self._policy = policy
        self._redactor = Redactor(config)
        self._allowlist = CompiledAllowlist(config.allowlist)
        self._identifying = frozenset(config.identifying_entities)
        self._quasi = frozenset(config.quasi_identifying_entities)
        self._confidential = frozenset(config.confidential_entities)
        self._org_file_state = _file_state(settings.org_identifiers_file)
        self.last_reload_error: str | None = None
        self._disabled_cache: dict[tuple[str, str], frozenset[str]] = {}

    @classmethod
    def from_settings(cls, settings: DlpSettings | None = None) -> DlpGuard:
        """Load engines, data and policy once (the slow part: 0.2-0.3 s)."""
        settings = settings or DlpSettings()
        try:
            config = load_guard_config(settings.config_file)
            identifiers = load_org_identifiers(settings.org_identifiers_file)
            detector = EntityDetector.build(config, _extra_recognizers(settings, config), identifiers,
                                            settings.prefilter_cache_dir, prefilter=settings.prefilter)
            medical = MedicalLexicon(settings.medical_dir, config.languages)
            policy = SensitivityPolicy(settings.policy_dir)
        except Exception as exc:  # whatever breaks at start-up: fail closed
            raise DlpUnavailable(f"DLP guard could not start: {type(exc).__name__}: {exc}") from exc
        return cls(settings, config, detector, medical, policy)

    @property
    def policy_version(self) -> str:
        return self._policy.version

    def replace_policy(self, source: PolicySource) -> None:
        """Install a sensitivity policy bundle from KV ``policies`` (issue 17); raises
        PolicyError if it does not compile, the old one stays in force."""
        self._policy.replace(source)

    @property
    def prefilter_ready(self) -> bool:
        """Whether the recognizer prefilter is in force (services/dlp/prefilter.py)."""
        return self._detector.prefilters_ready

    def prefilter_for(self, language: str) -> PatternPrefilter | None:
        return self._detector.prefilter_for(language)

    @property
    def org_identifiers(self) -> list[OrgIdentifier]:
        return list(self._detector.org_identifiers)

    # -- reload --------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the org identifier file and the policy; True if either changed.

        A broken file keeps the last good version in force; ``last_reload_error`` says why.
        """
        errors: list[str] = []
        changed = False
        state = _file_state(self.settings.org_identifiers_file)
        if state != self._org_file_state:
            try:
                identifiers = load_org_identifiers(self.settings.org_identifiers_file)
                self._detector = self._detector.with_org_identifiers(identifiers)
                self._org_file_state = state
                changed = True
            except OrgIdentifierError as exc:
                errors.append(f"org identifiers: {exc}")
        if self._policy.reload():
            changed = True
        elif self._policy.last_error:
            errors.append(f"policy: {self._policy.last_error}")
        self.last_reload_error = "; ".join(errors) or None
        if errors:
            log.warning("dlp_reload_failed", errors=len(errors))
        return changed

    # -- screening -----------------------------------------------------------------------

    def screen(
        self,
        texts: Sequence[str],
        *,
        direction: Direction,
        context: PolicyContext,
        pseudonymize: bool = False,
    ) -> Screening:
        try:
            return self._screen(list(texts), direction, context, pseudonymize)
        except DlpUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - see below
            # Any engine or policy failure: callers fail closed. Only the exception's type
            # goes into the message and the chain is cut: its text may quote content, and a
            # logged traceback would print it.
            raise DlpUnavailable(f"DLP screening failed: {type(exc).__name__}") from None

    def _screen(
        self, texts: list[str], direction: Direction, context: PolicyContext, pseudonymize: bool
    ) -> Screening:
        detector = self._detector  # one reference for the whole request (reload swaps it)
        disabled = self._disabled_entities(context.tenant)
        languages: list[str] = []
        spans: list[list[Span]] = []
        findings: list[Finding] = []
        medical_scans: list[MedicalScan] = []
        for index, text in enumerate(texts):
            # Recognizers read the normalised text (NFKC, de-obfuscated addresses); their
            # findings are mapped back, so everything after this works on the original.
            normalized = normalize(text)
            language = detect_language(
                normalized.text, self.config.languages, self.config.default_language
            )
            languages.append(language)
            results = detector.detect(normalized.text, language, disabled)
            if normalized.starts is not None:
                for result in results:
                    result.start, result.end = normalized.original_span(result.start, result.end)
            kept = self._accepted(text, results, direction)
            spans.append([Span(r.entity_type, r.start, r.end, r.score) for r in kept])
            findings.extend(
                Finding(r.entity_type, r.start, r.end, round(r.score, 3), index) for r in kept
            )
            medical_scans.append(self._medical.scan(text, language, [(r.start, r.end) for r in kept]))

        features = self._features(texts, findings, medical_scans, direction, context)
        decision = self._policy.decide(features)

        counts = Counter(f.type for f in findings)
        pseudonyms: dict[str, str] = {}
        out_texts: list[str] | None
        if decision.action == "block":
            out_texts = None
        elif decision.action == "redact":
            if pseudonymize:
                out_texts, pseudonyms = self._redactor.pseudonymize(texts, spans)
            else:
                out_texts = self._redactor.redact(texts, spans)
        else:
            out_texts = list(texts)

        dlp_decision = DlpDecision(
            direction=direction,
            action=decision.action,
            rule_id=decision.rule_id,
            policy_version=decision.policy_version,
            language=_dominant_language(texts, languages, self.config.default_language),
            derived_sensitivity=decision.derived_sensitivity,
            has_pii=features.has_pii,
            has_medical_terms=features.has_medical_terms,
            medical_term_density=features.medical_term_density,
            entities=[EntityCount(type=t, count=n) for t, n in sorted(counts.items())],
            pseudonymized=bool(pseudonyms),
        )
        return Screening(
            decision=dlp_decision,
            texts=out_texts,
            findings=findings,
            pseudonyms=pseudonyms,
            medical_categories=features.medical_categories,
            languages=languages,
        )

    def redact_findings(self, text: str, findings: Sequence[Finding]) -> str:
        """``text`` with these findings (offsets into ``text``) replaced as ``screen`` would
        replace them — for a piece of a streamed answer screened within a larger window."""
        spans = [Span(f.type, f.start, f.end, f.score) for f in findings]
        return self._redactor.redact([text], [spans])[0]

    def _disabled_entities(self, tenant: str) -> frozenset[str]:
        """Entities of the packs this tenant does not run (policy data, see docs/dlp.md).

        Without a ``recognizer_packs`` entry in the policy data every pack runs: a missing
        setting must not switch detection off."""
        version = self._policy.version
        cached = self._disabled_cache.get((version, tenant))
        if cached is not None:
            return cached
        setting = self._policy.data.get("stellwerk_dlp", {}).get("recognizer_packs")
        if setting is None:
            enabled = set(self.config.entity_packs)
        else:
            tenants = setting.get("tenants", {})
            chosen = tenants.get(tenant, setting.get("default", list(self.config.entity_packs)))
            if not isinstance(chosen, list) or not all(isinstance(p, str) for p in chosen):
                raise DlpUnavailable("recognizer_packs in the policy data is malformed")
            enabled = set(chosen)
        disabled = frozenset(
            e for pack, entities in self.config.entity_packs.items() if pack not in enabled
            for e in entities
        ) - frozenset(
            e for pack, entities in self.config.entity_packs.items() if pack in enabled
            for e in entities
        )
        if len(self._disabled_cache) > 4096:  # tenants are few; never grow without bound
            self._disabled_cache.clear()
        self._disabled_cache[(version, tenant)] = disabled
        return disabled

    def _accepted(
        self, text: str, results: Sequence[RecognizerResult], direction: Direction
    ) -> list[RecognizerResult]:
        config = self.config
        passing = [
            r for r in results
            if r.score >= config.min_score(r.entity_type, direction)
            and not self._allowlist.allows(r.entity_type, text[r.start:r.end])
        ]
        return _resolve_overlaps(passing)

    def _features(
        self,
        texts: Sequence[str],
        findings: Sequence[Finding],
        scans: Sequence[MedicalScan],
        direction: Direction,
        context: PolicyContext,
    ) -> PolicyFeatures:
        types = {f.type for f in findings}
        pii = [f for f in findings if f.type in self._identifying]
        term_count = sum(len(s.matches) for s in scans)
        words = sum(s.word_count for s in scans)
        placeholders: set[str] = set()
        if direction == "output":
            for text in texts:
                placeholders |= pseudonym_types(text)
        return PolicyFeatures(
            direction=direction,
            usecase_class=context.usecase_class,
            tenant=context.tenant,
            business_unit=context.business_unit,
            user_role=context.user_role,
            has_pii=bool(pii),
            pii_types=sorted({f.type for f in pii}),
            pii_confidence=max((f.score for f in pii), default=0.0),
            quasi_identifier_types=sorted(types & self._quasi),
            confidential_types=sorted(types & self._confidential),
            entity_types=sorted(types),
            has_medical_terms=term_count > 0,
            medical_term_count=term_count,
            medical_term_density=round(term_count / words, _DENSITY_DIGITS) if words else 0.0,
            medical_categories=sorted({c for s in scans for c in s.categories}),
            pseudonym_types=sorted(placeholders & self._identifying),
        )


def _dominant_language(texts: Sequence[str], languages: Sequence[str], default: str) -> str:
    weight: Counter[str] = Counter()
    for text, language in zip(texts, languages, strict=True):
        weight[language] += len(text)
    return weight.most_common(1)[0][0] if weight else default


def _file_state(path: Path) -> str | None:
    # Content, not mtime: two edits within the file system's timestamp granularity differ.
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _extra_recognizers(settings: DlpSettings, config: GuardConfig) -> dict[str, list[EntityRecognizer]]:
    """Recognizers of this package beyond Presidio's (phone, address, person gazetteer,
    validated identifiers from identifiers.yaml)."""
    names = NameLists.load(settings.names_dir)
    return {
        lang: [
            PhoneNumberRecognizer(lang),
            StreetAddressRecognizer(lang),
            PersonGazetteerRecognizer(names, lang),
            *identifier_recognizers(settings.identifiers_file, lang),
        ]
        for lang in config.languages
    }


