"""Prompt templates as versioned files, checked by their case tables (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.events import ChatMessage
from services.runtime.prompts import (
    SHIPPED_PROMPTS_DIR,
    PromptError,
    check_prompts,
    inject,
    load_templates,
)


def write(root: Path, template_id: str, text: str, cases: object | None = None) -> None:
    path = root / f"{template_id}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if cases is not None:
        (root / f"{template_id}_test.json").write_text(json.dumps(cases))


def test_shipped_templates_pass_their_case_tables() -> None:
    templates = check_prompts(SHIPPED_PROMPTS_DIR, {"chat/assistant", "chat/assistant-v2"})
    assert templates["chat/assistant"].version.startswith("chat/assistant@")
    assert templates["chat/assistant"].sha != templates["chat/assistant-v2"].sha


def test_version_is_the_content_hash(tmp_path: Path) -> None:
    write(tmp_path, "chat/a", "Be brief, $tenant.", [{"name": "x", "contains": ["brief"]}])
    before = load_templates(tmp_path)["chat/a"].version
    write(tmp_path, "chat/a", "Be very brief, $tenant.")
    after = load_templates(tmp_path)["chat/a"].version
    assert before != after and len(after.split("@")[1]) == 12
    write(tmp_path, "chat/a", "Be brief, $tenant.")
    assert load_templates(tmp_path)["chat/a"].version == before


def test_failing_case_is_refused_and_named(tmp_path: Path) -> None:
    write(tmp_path, "chat/a", "Answer for $tenant.", [
        {"name": "mentions sources", "input": {"tenant": "acme"}, "contains": ["sources"]},
        {"name": "short", "max_chars": 5},
    ])
    with pytest.raises(PromptError) as info:
        check_prompts(tmp_path)
    assert "mentions sources" in str(info.value) and "short" in str(info.value)


def test_unknown_placeholder_missing_table_and_missing_template_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "chat/a", "Hello $secret_name")
    with pytest.raises(PromptError, match="unknown placeholders"):
        check_prompts(tmp_path)
    (tmp_path / "chat" / "a.md").write_text("Hello $tenant")
    with pytest.raises(PromptError, match="no case table"):
        check_prompts(tmp_path)
    write(tmp_path, "chat/a", "Hello $tenant", [{"name": "ok", "contains": ["Hello"]}])
    assert check_prompts(tmp_path)
    with pytest.raises(PromptError, match="chat/b: no such template"):
        check_prompts(tmp_path, {"chat/b"})


def test_injected_first_callers_messages_unchanged() -> None:
    caller = [ChatMessage(role="system", content="caller system"), ChatMessage(role="user", content="hi")]
    sent = inject(caller, "platform text")
    assert [m.role for m in sent] == ["system", "system", "user"]
    assert sent[0].content == "platform text" and sent[1:] == caller
