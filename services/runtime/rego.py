"""Real Rego evaluation (rego-cpp via regopy) for policy-as-code decisions.

A policy directory holds ``*.rego`` modules and one ``data.json``. The policy version is
the SHA-256 over every file's name and bytes, so any edit to a rule *or* a threshold yields
a new version that travels with each decision. The bundle is compiled once; evaluation of
a compiled entrypoint costs tens of microseconds.

Policy tests live beside the policy as ``*_test.json`` case tables (input → expected
fields). regopy 1.5.2 crashes on Rego's ``with input as`` test idiom, so the cases are
evaluated by the same compiled bundle the service uses instead.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from regopy import Interpreter, RegoError


class PolicyError(RuntimeError):
    """The policy could not be loaded or did not produce a decision (callers fail closed)."""


@dataclass(frozen=True, slots=True)
class PolicySource:
    modules: dict[str, str]
    data: dict[str, Any]
    version: str


def read_policy_dir(directory: Path) -> PolicySource:
    """Read the modules and data of a policy directory and compute its content version."""
    if not directory.is_dir():
        raise PolicyError(f"policy directory not found: {directory}")
    digest = hashlib.sha256()
    modules: dict[str, str] = {}
    data: dict[str, Any] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix == ".rego" or path.name == "data.json":
            raw = path.read_bytes()
            digest.update(path.name.encode() + b"\0" + raw + b"\0")
            if path.suffix == ".rego":
                modules[path.name] = raw.decode()
            else:
                data = json.loads(raw)
    if not modules:
        raise PolicyError(f"no .rego modules in {directory}")
    return PolicySource(modules=modules, data=data, version="sha256:" + digest.hexdigest()[:16])


class CompiledPolicy:
    """One compiled bundle with a single entrypoint such as ``stellwerk/routing/decision``.

    Thread-safe: regopy interpreters are not, so evaluation is serialised per instance.
    """

    def __init__(self, source: PolicySource, entrypoint: str) -> None:
        self.version = source.version
        self.entrypoint = entrypoint
        self.data = source.data
        try:
            builder = Interpreter()
            builder.add_data(source.data)
            for name, text in source.modules.items():
                builder.add_module(name, text)
            self._bundle = builder.build(None, [entrypoint])
        except RegoError as exc:
            raise PolicyError(f"policy does not compile: {exc}") from exc
        self._runner = Interpreter()
        self._lock = threading.Lock()
        self._memo: OrderedDict[bytes, str] = OrderedDict()

    @classmethod
    def from_dir(cls, directory: Path, entrypoint: str) -> CompiledPolicy:
        return cls(read_policy_dir(directory), entrypoint)

    def evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        """Evaluate the entrypoint; raise PolicyError when it yields no object.

        Decisions are memoised per input (bounded LRU): a policy is a pure function of its
        input and data (our policies use no clock, randomness or HTTP built-ins — a test
        checks), and the same few feature combinations recur constantly, while handing an
        input to regopy costs more than the evaluation itself."""
        key = _canonical(policy_input)
        text = self._memo.get(key)
        if text is not None:
            self._memo.move_to_end(key)
        else:
            text = self._evaluate_text(policy_input)
            self._memo[key] = text
            if len(self._memo) > _MEMO_SIZE:
                self._memo.popitem(last=False)
        return self._parse(text)

    def _evaluate_text(self, policy_input: dict[str, Any]) -> str:
        with self._lock:
            try:
                self._runner.set_input(policy_input)
                output = self._runner.query_bundle_entrypoint(self._bundle, self.entrypoint)
            except RegoError as exc:
                raise PolicyError(f"policy evaluation failed: {exc}") from exc
            if not output.ok():
                raise PolicyError("policy evaluation failed")
            return str(output)

    def _parse(self, text: str) -> dict[str, Any]:
        try:
            result = json.loads(text).get("expressions") or [None]
        except ValueError as exc:  # regopy answers the bare word "undefined" for no value
            raise PolicyError(f"policy {self.entrypoint} is undefined for this input") from exc
        decision = result[0]
        if not isinstance(decision, dict):
            raise PolicyError(f"policy {self.entrypoint} produced no decision")
        return decision


_MEMO_SIZE = 4096
_canonical_encoder = msgspec.json.Encoder(order="sorted")


def _canonical(value: dict[str, Any]) -> bytes:
    return _canonical_encoder.encode(value)


class ReloadingPolicy:
    """A CompiledPolicy that recompiles when its directory's content hash changes.

    ``current()`` checks file contents at most every ``check_interval`` seconds; a broken
    edit keeps the last good version in force and is reported through ``last_error``.
    """

    def __init__(self, directory: Path, entrypoint: str, check_interval: float = 1.0) -> None:
        self.directory = directory
        self.entrypoint = entrypoint
        self.check_interval = check_interval
        self._policy = CompiledPolicy.from_dir(directory, entrypoint)
        self._checked_at = time.monotonic()
        self.last_error: str | None = None

    def current(self) -> CompiledPolicy:
        now = time.monotonic()
        if now - self._checked_at >= self.check_interval:
            self._checked_at = now
            self.reload()
        return self._policy

    def reload(self) -> bool:
        """Recompile if the content changed; return True when a new version took effect."""
        try:
            source = read_policy_dir(self.directory)
            if source.version == self._policy.version:
                return False
            self._policy = CompiledPolicy(source, self.entrypoint)
        except (PolicyError, OSError, ValueError) as exc:
            self.last_error = str(exc)
            return False
        self.last_error = None
        return True

    def replace(self, source: PolicySource) -> None:
        """Install a pushed policy (e.g. from ``stellwerk policy push``) without touching disk."""
        self._policy = CompiledPolicy(source, self.entrypoint)


class BundledPolicy(ReloadingPolicy):
    """A ReloadingPolicy that also takes bundles pushed through the mesh (KV ``policies``).

    ``ReloadingPolicy`` alone would undo a push on its next file check, because the pushed
    version differs from the directory's. This keeps a pushed policy in force until the
    directory's content changes after the push: whichever change came last wins.
    """

    def __init__(self, directory: Path, entrypoint: str, check_interval: float = 1.0) -> None:
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


def run_case_table(policy: CompiledPolicy, cases_file: Path) -> list[str]:
    """Evaluate a ``*_test.json`` case table; return one message per failed case.

    Each case is ``{"name": ..., "input": {...}, "expect": {field: value, ...}}``; only the
    named fields are compared, so a case states exactly what it is about.
    """
    failures: list[str] = []
    for case in json.loads(cases_file.read_text()):
        got = policy.evaluate(case["input"])
        for key, want in case["expect"].items():
            if got.get(key) != want:
                failures.append(f"{case['name']}: {key} = {got.get(key)!r}, want {want!r}")
    return failures
