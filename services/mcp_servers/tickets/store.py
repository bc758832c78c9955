"""The ticket store: plain SQLite, one connection per process, WAL so that several server
processes (one per gateway worker over stdio) can share one database file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, get_args

from pydantic import BaseModel

Status = Literal["open", "in_progress", "resolved", "closed"]
Priority = Literal["low", "normal", "high", "urgent"]
STATUSES: Final[tuple[Status, ...]] = get_args(Status)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'open',
    priority TEXT NOT NULL DEFAULT 'normal',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id INTEGER NOT NULL REFERENCES tickets(id),
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""

# A newcomer's first `stellwerk tools call tickets.get_ticket` should find something.
_DEMO: Final[tuple[tuple[str, str, Priority], ...]] = (
    ("VPN drops every 30 minutes", "Laptop loses the VPN tunnel in the claims office.", "normal"),
    ("Printer queue stuck", "Floor 3 printer holds every job since Monday.", "low"),
    ("Claims portal timeout", "Uploading scanned documents times out above 10 MB.", "high"),
)


class Comment(BaseModel):
    body: str
    created_at: str


class Ticket(BaseModel):
    id: int
    title: str
    description: str
    status: Status
    priority: Priority
    created_at: str
    updated_at: str
    comments: list[Comment] = []


class TicketNotFound(LookupError):
    pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TicketStore:
    def __init__(self, path: Path, *, seed_demo: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        if seed_demo:
            self._seed()

    def _seed(self) -> None:
        # BEGIN IMMEDIATE: two server processes starting together seed the demo data once.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._db.execute("SELECT COUNT(*) FROM tickets").fetchone()[0] == 0:
                now = _now()
                self._db.executemany(
                    "INSERT INTO tickets (title, description, priority, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(t, d, p, now, now) for t, d, p in _DEMO],
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def get(self, ticket_id: int) -> Ticket:
        row = self._db.execute("SELECT * FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        if row is None:
            raise TicketNotFound(ticket_id)
        comments = [
            Comment(body=c["body"], created_at=c["created_at"])
            for c in self._db.execute(
                "SELECT body, created_at FROM comments WHERE ticket_id = ? ORDER BY id", (ticket_id,)
            )
        ]
        return Ticket(**dict(row), comments=comments)

    def search(
        self, *, status: Status | None, priority: Priority | None, text: str | None, limit: int
    ) -> list[Ticket]:
        clauses: list[str] = []
        params: list[object] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if priority is not None:
            clauses.append("priority = ?")
            params.append(priority)
        if text:
            clauses.append("(title LIKE ? OR description LIKE ?)")
            params += [f"%{text}%", f"%{text}%"]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT * FROM tickets {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [Ticket(**dict(row)) for row in rows]

    def create(self, *, title: str, description: str, priority: Priority) -> Ticket:
        now = _now()
        cursor = self._db.execute(
            "INSERT INTO tickets (title, description, priority, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (title, description, priority, now, now),
        )
        assert cursor.lastrowid is not None
        return self.get(cursor.lastrowid)

    def set_status(self, ticket_id: int, status: Status, comment: str | None) -> Ticket:
        now = _now()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            updated = self._db.execute(
                "UPDATE tickets SET status = ?, updated_at = ? WHERE id = ?", (status, now, ticket_id)
            ).rowcount
            if not updated:
                raise TicketNotFound(ticket_id)
            if comment:
                self._db.execute(
                    "INSERT INTO comments (ticket_id, body, created_at) VALUES (?, ?, ?)", (ticket_id, comment, now)
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self.get(ticket_id)
