"""Result retention per use case: which sources a search returned, kept for traceability for
the use case's ``retention_days``, then deleted.

Kept are references only — the query's SHA-256, result URLs and titles, use case, tenant and
times; never the query text or snippets ("no unnecessary copies of content"). Expired rows
are purged on every write and at start-up, so retention holds without a separate job.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS retained_searches (
    search_id TEXT PRIMARY KEY,
    usecase TEXT NOT NULL,
    tenant TEXT,
    query_sha256 TEXT NOT NULL,
    results TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS retained_searches_expiry ON retained_searches (expires_at);
"""


@dataclass(frozen=True, slots=True)
class Reference:
    url: str
    title: str


@dataclass(frozen=True, slots=True)
class Retained:
    search_id: str
    usecase: str
    tenant: str | None
    query_sha256: str
    references: list[Reference]
    created_at: datetime
    expires_at: datetime


class RetentionStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self.purge()

    def close(self) -> None:
        self._db.close()

    def keep(
        self,
        *,
        query: str,
        usecase: str,
        tenant: str | None,
        references: Sequence[Reference],
        retention_days: float,
        now: datetime | None = None,
    ) -> str | None:
        """Record a search if its use case retains results; return its id (None: not kept)."""
        now = now or datetime.now(UTC)
        self.purge(now)
        if retention_days <= 0:
            return None
        search_id = uuid.uuid4().hex
        self._db.execute(
            "INSERT INTO retained_searches VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                search_id,
                usecase,
                tenant,
                hashlib.sha256(query.encode()).hexdigest(),
                json.dumps([{"url": r.url, "title": r.title} for r in references]),
                now.isoformat(),
                (now + timedelta(days=retention_days)).isoformat(),
            ),
        )
        return search_id

    def get(self, search_id: str) -> Retained | None:
        row = self._db.execute(
            "SELECT search_id, usecase, tenant, query_sha256, results, created_at, expires_at"
            " FROM retained_searches WHERE search_id = ?",
            (search_id,),
        ).fetchone()
        if row is None:
            return None
        return Retained(
            search_id=row[0],
            usecase=row[1],
            tenant=row[2],
            query_sha256=row[3],
            references=[Reference(**r) for r in json.loads(row[4])],
            created_at=datetime.fromisoformat(row[5]),
            expires_at=datetime.fromisoformat(row[6]),
        )

    def purge(self, now: datetime | None = None) -> int:
        """Delete every record past its retention; return how many went."""
        # ISO-8601 strings of one timezone (UTC) compare in time order.
        cutoff = (now or datetime.now(UTC)).isoformat()
        return self._db.execute("DELETE FROM retained_searches WHERE expires_at <= ?", (cutoff,)).rowcount
