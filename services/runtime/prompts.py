"""Prompt templates as versioned files (issue 17): system prompts the platform injects.

A template is ``<dir>/<usecase>/<name>.md``: its id is ``<usecase>/<name>``, its version the
first 12 hex digits of the SHA-256 of its bytes, recorded as ``<usecase>/<name>@<hash>`` in
the audit trail (``prompt_template_version``) — any recorded version resolves to exactly one
text in the repository's history. ``$tenant``, ``$business_unit`` and ``$usecase_class`` are
filled in from the request's envelope (``string.Template``; ``$$`` is a dollar sign).

Beside a template, ``<name>_test.json`` is its case table, run by ``stellwerk prompts check``
like the policies' tables: a list of ``{"name", "input": {tenant, business_unit,
usecase_class}, "contains": [...], "not_contains": [...], "max_chars": N}``. A directory
passes only when every template renders for every case (no unknown placeholder) and every
case holds.

Injection happens in inference, after input DLP: the template is platform text, not the
caller's, so it is not screened (the caller's messages were, and they follow it unchanged).
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from schemas.events import ChatMessage

SHIPPED_PROMPTS_DIR: Final = Path(__file__).parent / "defaults" / "prompts"
PLACEHOLDERS: Final = frozenset({"tenant", "business_unit", "usecase_class"})


class PromptError(ValueError):
    """A template directory that does not load or whose case tables fail."""


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    id: str  # <usecase>/<name>
    text: str
    sha: str  # first 12 hex digits of SHA-256 over the file's bytes

    @property
    def version(self) -> str:
        return f"{self.id}@{self.sha}"

    def render(self, values: dict[str, str]) -> str:
        try:
            return string.Template(self.text).substitute(values)
        except (KeyError, ValueError) as exc:
            # Names the placeholder, never the text.
            raise PromptError(f"template {self.id}: placeholder {exc} cannot be filled") from exc


def load_templates(directory: Path) -> dict[str, PromptTemplate]:
    """Every ``<usecase>/<name>.md`` below ``directory`` by id; unknown placeholders fail here."""
    templates: dict[str, PromptTemplate] = {}
    if not directory.is_dir():
        raise PromptError(f"prompt directory {directory} does not exist")
    for path in sorted(directory.glob("*/*.md")):
        raw = path.read_bytes()
        template = PromptTemplate(
            id=f"{path.parent.name}/{path.stem}",
            text=raw.decode("utf-8"),
            sha=hashlib.sha256(raw).hexdigest()[:12],
        )
        unknown = _placeholders(template.text) - PLACEHOLDERS
        if unknown:
            raise PromptError(f"template {template.id}: unknown placeholders {sorted(unknown)}")
        templates[template.id] = template
    return templates


def _placeholders(text: str) -> set[str]:
    found: set[str] = set()
    for match in string.Template.pattern.finditer(text):
        name = match.group("named") or match.group("braced")
        if name:
            found.add(name)
        elif match.group("invalid") is not None:
            raise PromptError("a '$' that is no placeholder (write '$$' for a dollar sign)")
    return found


def envelope_values(tenant: str, business_unit: str, usecase_class: str) -> dict[str, str]:
    return {"tenant": tenant, "business_unit": business_unit, "usecase_class": usecase_class}


def inject(messages: list[ChatMessage], rendered: str) -> list[ChatMessage]:
    """The platform's system prompt first, then the caller's messages unchanged."""
    return [ChatMessage(role="system", content=rendered), *messages]


def run_cases(template: PromptTemplate, cases: list[dict[str, Any]]) -> list[str]:
    """Failures of one case table (empty: all hold). Failures name the case and the check."""
    failures: list[str] = []
    for case in cases:
        name = str(case.get("name", "?"))
        values = {"tenant": "t", "business_unit": "bu", "usecase_class": template.id.split("/")[0]}
        values |= {k: str(v) for k, v in dict(case.get("input", {})).items()}
        try:
            rendered = template.render(values)
        except PromptError as exc:
            failures.append(f"{name}: {exc}")
            continue
        for needle in case.get("contains", []):
            if needle not in rendered:
                failures.append(f"{name}: does not contain {needle!r}")
        for needle in case.get("not_contains", []):
            if needle in rendered:
                failures.append(f"{name}: contains {needle!r}")
        limit = case.get("max_chars")
        if limit is not None and len(rendered) > int(limit):
            failures.append(f"{name}: {len(rendered)} characters, more than {limit}")
    return failures


def check_prompts(directory: Path, required: set[str] | None = None) -> dict[str, PromptTemplate]:
    """Load a template directory and run every case table; raise PromptError on any failure.
    ``required``: template ids the config names, which must exist. A template without a table
    is refused too: prompts are code, and code ships with its tests."""
    templates = load_templates(directory)
    failures: list[str] = []
    for template_id in sorted(required or set()):
        if template_id not in templates:
            failures.append(f"{template_id}: no such template")
    for template in templates.values():
        table = directory / f"{template.id}_test.json"
        if not table.exists():
            failures.append(f"{template.id}: no case table {table.name}")
            continue
        try:
            cases = json.loads(table.read_text())
        except (OSError, ValueError) as exc:
            failures.append(f"{template.id}: case table unreadable ({type(exc).__name__})")
            continue
        if not isinstance(cases, list) or not cases:
            failures.append(f"{template.id}: case table must be a non-empty list")
            continue
        failures.extend(f"{template.id}: {f}" for f in run_cases(template, cases))
    if failures:
        raise PromptError(f"{len(failures)} prompt check(s) failed: " + "; ".join(failures))
    return templates


def configured_templates(prompts_dir: Path | None, usecase_templates: dict[str, str],
                         variant_templates: set[str]) -> dict[str, PromptTemplate]:
    """The templates a worker needs, checked at start (fail closed: a broken template directory
    stops the worker instead of sending requests without their system prompt)."""
    required = set(usecase_templates.values()) | variant_templates
    if not required:
        return {}
    return check_prompts(prompts_dir or SHIPPED_PROMPTS_DIR, required)
