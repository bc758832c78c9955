"""Skip pattern recognizers that cannot match: one Hyperscan scan instead of ~60 regex scans.

Presidio runs every pattern of every pattern recognizer over every text (~60 patterns per
language here, each a separate ``regex`` scan with Python bookkeeping around it), although
a typical prompt matches none of them: that loop was half of a screening's CPU. Hyperscan
compiles all patterns of a language into one automaton in *prefilter* mode, which by
construction matches a superset of what each pattern matches (constructs it cannot express
— look-arounds, ``\\b`` under Unicode rules — are widened, never narrowed). One scan tells
which recognizers *may* match; the others are skipped, the rest run unchanged in Presidio.

Why skipping is exact: a ``PatternRecognizer`` only reports matches of its own patterns
(our subclasses filter or re-score those matches, never add findings), so a recognizer none
of whose patterns matches anywhere returns nothing. Every pattern is compiled with the
widest flags (caseless, dot-all, multi-line, Unicode classes as the ``regex`` module reads
``\\d``/``\\w``) whatever the recognizer's own flags, which only adds candidates. It fails
open *to running everything*, never to skipping: until the automaton is ready, if it cannot
be built, or if a text cannot be scanned, every recognizer runs. tests/dlp/test_prefilter.py
checks on a generated corpus that findings with and without the prefilter are identical.

Compiling with Unicode classes takes ~5 s of CPU per language, so it runs in a background
thread (Hyperscan releases the GIL) while the worker already screens without the shortcut,
and the result is cached on disk by the hash of the patterns (``prefilter_cache_dir``): the
next start of any worker on this machine loads it in milliseconds. The cache is as trusted
as the DLP's policy files: whoever can write it could make the shortcut skip recognizers.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import importlib.metadata
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hyperscan
import regex
import structlog
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerRegistry

log = structlog.get_logger("stellwerk.dlp")
_KEEP_UNUSED_S = 30 * 24 * 3600
_ENGINE = f"hyperscan {importlib.metadata.version('hyperscan')}"  # a new engine rebuilds the cache

_WIDEST = (
    hyperscan.HS_FLAG_PREFILTER  # a superset of the pattern's matches
    | hyperscan.HS_FLAG_CASELESS
    | hyperscan.HS_FLAG_DOTALL
    | hyperscan.HS_FLAG_MULTILINE
    | hyperscan.HS_FLAG_UTF8
    | hyperscan.HS_FLAG_UCP  # \w, \d, \s as Unicode classes, as the ``regex`` module reads them
    | hyperscan.HS_FLAG_SINGLEMATCH  # one report per pattern is all a yes/no needs
    | hyperscan.HS_FLAG_ALLOWEMPTY
)

# Braces that are a quantifier; any other unescaped ``{...}`` may be a fuzzy-matching
# constraint of the ``regex`` module (``(?:foo){e<=1}``), which Hyperscan would read as
# literal text and so match *less*.
_BRACES = re.compile(r"(?<!\\)\{([^}]*)\}")
_QUANTIFIER = re.compile(r"\d*,?\d*")


def _patterns(recognizer: PatternRecognizer) -> list[Pattern]:
    patterns: list[Pattern] = getattr(recognizer, "patterns", [])  # Presidio is untyped
    return patterns


def _portable(pattern: str) -> bool:
    """Whether Hyperscan reads ``pattern`` as the ``regex`` module does (else: always run).

    The subset both understand alike is what Python's own ``re`` accepts without warnings:
    ``regex``-only syntax (``(?V1)`` set operations, branch reset, recursion, ``\\G``, named
    lists, POSIX classes) is refused by ``re``; fuzzy constraints are refused here."""
    if any(not _QUANTIFIER.fullmatch(m.group(1)) for m in _BRACES.finditer(pattern)):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            re.compile(pattern)
    except (re.error, Warning, RecursionError):
        return False
    return True


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


class _ClassAgreement:
    """Whether Hyperscan puts a character in ``\\w``, ``\\d`` and ``\\s`` exactly as the
    ``regex`` module does. Their Unicode tables differ: ``regex`` counts combining marks as
    word characters, and knows the digits of scripts newer than Hyperscan's tables (Hanifi
    Rohingya, Wancho, …) — a tax number written in those digits matches a recognizer's ``\\d``
    in ``regex`` but not in the automaton. A text with such a character runs every recognizer."""

    def __init__(self) -> None:
        self._tables: list[tuple[regex.Pattern[str], hyperscan.Database, hyperscan.Scratch]] = []
        for pattern in (r"\w", r"\d", r"\s"):
            database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            database.compile(expressions=[pattern.encode()], ids=[0], elements=1,
                             flags=[hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP | hyperscan.HS_FLAG_SINGLEMATCH])
            self._tables.append((regex.compile(pattern), database, hyperscan.Scratch(database)))
        self._agrees: dict[str, bool] = {}

    def __call__(self, char: str) -> bool:
        known = self._agrees.get(char)
        if known is None:
            known = all(bool(python.match(char)) == bool(_hits(database, scratch, char))
                        for python, database, scratch in self._tables)
            self._agrees[char] = known  # bounded by the characters Unicode has
        return known


@functools.cache
def _class_agreement() -> _ClassAgreement:
    """One per process: every language's prefilter asks the same question (scans run on the
    worker's event loop only, so the shared scratch spaces are never used twice at once)."""
    return _ClassAgreement()


def _hits(database: hyperscan.Database, scratch: hyperscan.Scratch, text: str) -> set[int]:
    """The ids of the expressions of ``database`` that match somewhere in ``text``."""
    hits: set[int] = set()

    def on_match(owner: int, _start: int, _end: int, _flags: int, _context: object) -> None:
        hits.add(owner)

    database.scan(text.encode("utf-8"), match_event_handler=on_match, scratch=scratch)
    return hits


# The recognizers this analysis call skips (ids), set by ``PatternPrefilter.skipping``.
_skipped: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "stellwerk_dlp_skipped_recognizers", default=frozenset()
)


class PrefilteredRegistry(RecognizerRegistry):
    """A registry that leaves out the recognizers the current call's prefilter excluded."""

    def get_recognizers(self, *args: Any, **kwargs: Any) -> list[EntityRecognizer]:
        recognizers: list[EntityRecognizer] = super().get_recognizers(*args, **kwargs)
        skipped = _skipped.get()
        if not skipped:
            return recognizers
        return [r for r in recognizers if id(r) not in skipped]


class PatternPrefilter:
    """For one language's pattern recognizers: which of them may match a text."""

    def __init__(self, recognizers: Sequence[EntityRecognizer], cache_dir: Path | None,
                 *, background: bool = True) -> None:
        self._gated: list[PatternRecognizer] = []
        self._expressions: list[str] = []
        self._owners: list[int] = []
        for recognizer in recognizers:
            if not isinstance(recognizer, PatternRecognizer):
                continue
            expressions = [str(p.regex) for p in _patterns(recognizer)]
            if expressions and all(_portable(e) for e in expressions):
                self._owners += [len(self._gated)] * len(expressions)
                self._expressions += expressions
                self._gated.append(recognizer)
        # The automaton and its scratch space (one scan at a time: screening is synchronous on
        # the worker's event loop), set once built; read without a lock (one reference).
        self._automaton: tuple[hyperscan.Database, hyperscan.Scratch] | None = None
        self._cache_file = cache_dir / f"{self.key}.hsdb" if cache_dir is not None else None
        if not self._gated or self._load_cached():
            return
        if background:
            threading.Thread(target=self._compile, name="dlp-prefilter", daemon=True).start()
        else:
            self._compile()

    @property
    def key(self) -> str:
        """What the automaton is built from: the patterns, their owners, flags and engine."""
        digest = hashlib.sha256(f"{_ENGINE}\0{_WIDEST}".encode())
        for owner, expression in zip(self._owners, self._expressions, strict=True):
            digest.update(f"\0{owner}\0{expression}".encode())
        return digest.hexdigest()[:32]

    @property
    def gated(self) -> int:
        """How many recognizers the prefilter may skip (the others always run)."""
        return len(self._gated)

    @property
    def ready(self) -> bool:
        return self._automaton is not None

    def excluded(self, text: str) -> frozenset[int]:
        """Ids of the recognizers that cannot match ``text`` (empty: run them all)."""
        automaton = self._automaton
        if automaton is None:
            return frozenset()
        database, scratch = automaton
        try:
            agrees = _class_agreement()
            if not all(agrees(char) for char in set(_NON_ASCII.findall(text))):
                return frozenset()  # a character the automaton reads differently: run everything
            hits = _hits(database, scratch, text)
        except (UnicodeEncodeError, hyperscan.error):
            return frozenset()  # cannot tell (a lone surrogate, a scan error): every recognizer runs
        return frozenset(id(r) for index, r in enumerate(self._gated) if index not in hits)

    @contextlib.contextmanager
    def skipping(self, text: str) -> Iterator[None]:
        """Within this block, a ``PrefilteredRegistry`` leaves out what cannot match ``text``."""
        token = _skipped.set(self.excluded(text))
        try:
            yield
        finally:
            _skipped.reset(token)

    # -- building ---------------------------------------------------------------------

    def _load_cached(self) -> bool:
        if self._cache_file is None or not self._cache_file.is_file():
            return False
        try:
            database = hyperscan.loadb(self._cache_file.read_bytes(), hyperscan.HS_MODE_BLOCK)
            scratch = hyperscan.Scratch(database)  # a database of another CPU fails here
        except (OSError, hyperscan.error):
            log.info("dlp_prefilter_cache_unusable")
            return False
        self._automaton = (database, scratch)
        with contextlib.suppress(OSError):
            os.utime(self._cache_file)  # in use: kept by the clean-up in _store
        return True

    def _compile(self) -> None:
        try:
            database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            database.compile(expressions=[e.encode() for e in self._expressions], ids=self._owners,
                             elements=len(self._expressions), flags=[_WIDEST] * len(self._expressions))
        except hyperscan.error as exc:
            # A pattern Hyperscan cannot read: no shortcut, every recognizer keeps running.
            log.warning("dlp_prefilter_unavailable", error=type(exc).__name__)
            return
        self._automaton = (database, hyperscan.Scratch(database))
        self._store(database)

    def _store(self, database: hyperscan.Database) -> None:
        if self._cache_file is None:
            return
        try:
            self._cache_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self._cache_file.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(hyperscan.dumpb(database))
            partial.replace(self._cache_file)  # atomic: a concurrent start reads all or nothing
            # Automata of patterns no worker has loaded for a month (~8 MB each) go.
            stale = time.time() - _KEEP_UNUSED_S
            for old in self._cache_file.parent.glob("*.hsdb"):
                if old.stat().st_mtime < stale:
                    old.unlink(missing_ok=True)
        except OSError as exc:
            log.info("dlp_prefilter_cache_not_written", error=type(exc).__name__)
