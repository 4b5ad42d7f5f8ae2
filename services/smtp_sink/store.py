"""Durable record of every mail the sink accepted (SQLite, one file under .state/smtp_sink/).

A mail is committed before the sink answers 250 to DATA, so what a client saw accepted is on
disk, and survives a restart of the sink. WAL journal with synchronous=NORMAL: a commit survives
the process dying at any instant (it is in the WAL file), at the cost of the last commits on a
power loss, which a development sink can afford; it keeps tens of thousands of mails per minute
cheap.

Only the fields used to search are extracted when a mail arrives (recipients, Message-ID,
sender, subject); the headers and body are parsed from the stored raw bytes when read.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    -- AUTOINCREMENT: ids are never reused after a clear, so a paging cursor never skips a mail.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT    NOT NULL,
    peer        TEXT,
    mail_from   TEXT    NOT NULL,
    message_id  TEXT,
    subject     TEXT,
    size        INTEGER NOT NULL,
    raw         BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE INDEX IF NOT EXISTS messages_from ON messages (lower(mail_from), id);
-- One row per envelope recipient: the unit the duplicate statistics count.
CREATE TABLE IF NOT EXISTS recipients (
    id          INTEGER PRIMARY KEY,
    message_row INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    rcpt        TEXT    NOT NULL,
    rcpt_lower  TEXT    NOT NULL,
    message_id  TEXT,
    UNIQUE (message_row, rcpt_lower)
);
CREATE INDEX IF NOT EXISTS recipients_rcpt ON recipients (rcpt_lower, message_row);
CREATE INDEX IF NOT EXISTS recipients_message_id ON recipients (message_id, rcpt_lower);
-- Recipients the sink refused on purpose (failure rules): what a delivery test asserts on.
CREATE TABLE IF NOT EXISTS refusals (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT    NOT NULL,
    mail_from  TEXT,
    rcpt       TEXT    NOT NULL,
    code       INTEGER NOT NULL,
    reply      TEXT    NOT NULL
);
"""

SAMPLE_SIZE = 20


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _unfold(value: str | None) -> str | None:
    return " ".join(value.split()) if value is not None else None


@dataclass(frozen=True)
class StoredMessage:
    id: int
    received_at: str
    peer: str | None
    mail_from: str
    rcpts: list[str]
    message_id: str | None
    subject: str | None
    size: int
    raw: bytes

    def parsed(self) -> tuple[list[tuple[str, str]], str]:
        """(headers in order, body text): decoded when single-part, else the raw MIME body."""
        message = BytesParser(policy=policy.default).parsebytes(self.raw)
        headers = [(name, str(value)) for name, value in message.items()]
        body: str | None = None
        if isinstance(message, EmailMessage) and not message.is_multipart():
            try:
                content = message.get_content()
            except (LookupError, ValueError):
                content = None  # unknown charset or broken encoding: fall back to the raw body
            if isinstance(content, str):
                body = content
        if body is None:
            separator = self.raw.find(b"\r\n\r\n")
            start = separator + 4 if separator >= 0 else len(self.raw)
            body = self.raw[start:].decode("utf-8", errors="replace")
        # SMTP carries CRLF line ends; a reader (or a test) expects the text as it was written.
        return headers, body.replace("\r\n", "\n")


class SinkStore:
    """The SQLite file and every query on it. Used from the event loop's thread only."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._headers = BytesHeaderParser(policy=policy.compat32)

    def close(self) -> None:
        self._db.close()

    def ping(self) -> None:
        self._db.execute("SELECT 1").fetchone()

    def record(self, *, peer: str | None, mail_from: str, rcpts: list[str], raw: bytes) -> int:
        """Store one accepted mail (all its envelope recipients) in one transaction."""
        head = self._headers.parsebytes(raw)
        message_id = _unfold(head.get("Message-ID"))
        subject = _unfold(head.get("Subject"))
        with self._db:  # one transaction: the mail and its recipients, or nothing
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT INTO messages"
                " (received_at, peer, mail_from, message_id, subject, size, raw)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_now(), peer, mail_from, message_id, subject, len(raw), raw),
            )
            row = int(cursor.lastrowid or 0)
            self._db.executemany(
                "INSERT OR IGNORE INTO recipients (message_row, rcpt, rcpt_lower, message_id)"
                " VALUES (?, ?, ?, ?)",
                [(row, rcpt, rcpt.lower(), message_id) for rcpt in rcpts],
            )
        return row

    def record_refusal(self, *, mail_from: str | None, rcpt: str, code: int, reply: str) -> None:
        self._db.execute(
            "INSERT INTO refusals (at, mail_from, rcpt, code, reply) VALUES (?, ?, ?, ?, ?)",
            (_now(), mail_from, rcpt, code, reply),
        )

    def _rcpts(self, rows: list[int]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {row: [] for row in rows}
        if rows:
            marks = ",".join("?" * len(rows))
            for row, rcpt in self._db.execute(
                f"SELECT message_row, rcpt FROM recipients WHERE message_row IN ({marks})"
                " ORDER BY message_row, id",
                rows,
            ):
                found[row].append(rcpt)
        return found

    def find(
        self,
        *,
        rcpt: str | None = None,
        message_id: str | None = None,
        mail_from: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> tuple[list[StoredMessage], int | None, int]:
        """Matching mails in arrival order after the cursor: (page, next cursor, total matches)."""
        where = ["1=1"]
        args: list[Any] = []
        if rcpt is not None:
            where.append("id IN (SELECT message_row FROM recipients WHERE rcpt_lower = ?)")
            args.append(rcpt.lower())
        if message_id is not None:
            # Accept the id with or without its angle brackets.
            bare = message_id.strip().strip("<>")
            where.append("message_id IN (?, ?)")
            args += [bare, f"<{bare}>"]
        if mail_from is not None:
            where.append("lower(mail_from) = ?")
            args.append(mail_from.lower())
        condition = " AND ".join(where)
        total = self._db.execute(f"SELECT count(*) FROM messages WHERE {condition}", args)
        (count,) = total.fetchone()
        rows = self._db.execute(
            "SELECT id, received_at, peer, mail_from, message_id, subject, size, raw"
            f" FROM messages WHERE {condition} AND id > ? ORDER BY id LIMIT ?",
            [*args, after, limit + 1],
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        rcpts = self._rcpts([r[0] for r in rows])
        page = [
            StoredMessage(
                id=r[0],
                received_at=r[1],
                peer=r[2],
                mail_from=r[3],
                rcpts=rcpts[r[0]],
                message_id=r[4],
                subject=r[5],
                size=r[6],
                raw=bytes(r[7]),
            )
            for r in rows
        ]
        return page, (page[-1].id if more else None), int(count)

    def deliveries(
        self, *, mail_from: str, after: int = 0, limit: int = 10_000
    ) -> list[tuple[int, str | None, str, str]]:
        """(row, Message-ID, recipient, received_at) of every mail from `mail_from` after the
        row cursor, in arrival order: what an exactly-once test counts, without the bodies."""
        rows = self._db.execute(
            "SELECT m.id, m.message_id, r.rcpt, m.received_at FROM messages m"
            " JOIN recipients r ON r.message_row = m.id"
            " WHERE lower(m.mail_from) = ? AND m.id > ? ORDER BY m.id LIMIT ?",
            (mail_from.lower(), after, limit),
        ).fetchall()
        return [(int(r[0]), r[1], str(r[2]), str(r[3])) for r in rows]

    def get(self, row: int) -> StoredMessage | None:
        page, _, _ = self.find(after=row - 1, limit=1)
        return page[0] if page and page[0].id == row else None

    def stats(self) -> dict[str, Any]:
        """Counts, and the Message-IDs / (Message-ID, recipient) pairs received more than once."""
        db = self._db
        (messages,) = db.execute("SELECT count(*) FROM messages").fetchone()
        (recipients,) = db.execute("SELECT count(*) FROM recipients").fetchone()
        (refused,) = db.execute("SELECT count(*) FROM refusals").fetchone()
        by_id = (
            "SELECT message_id, count(*) AS copies FROM messages"
            " WHERE message_id IS NOT NULL GROUP BY message_id HAVING count(*) > 1"
        )
        by_pair = (
            "SELECT message_id, min(rcpt) AS rcpt, count(*) AS copies FROM recipients"
            " WHERE message_id IS NOT NULL GROUP BY message_id, rcpt_lower HAVING count(*) > 1"
        )
        summary: dict[str, Any] = {}
        for key, query, columns in (
            ("duplicate_message_ids", by_id, ("message_id", "copies")),
            ("duplicate_deliveries", by_pair, ("message_id", "rcpt", "copies")),
        ):
            count, extra = db.execute(
                f"SELECT count(*), coalesce(sum(copies - 1), 0) FROM ({query})"
            ).fetchone()
            sample = db.execute(
                f"SELECT * FROM ({query}) ORDER BY copies DESC LIMIT ?", (SAMPLE_SIZE,)
            ).fetchall()
            summary[key] = {
                "count": count,
                "extra_copies": extra,
                "sample": [dict(zip(columns, r, strict=True)) for r in sample],
            }
        return {"messages": messages, "recipients": recipients, "refused": refused, **summary}

    def refusals(self, *, rcpt: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = "SELECT id, at, mail_from, rcpt, code, reply FROM refusals"
        args: list[Any] = []
        if rcpt is not None:
            query += " WHERE lower(rcpt) = ?"
            args.append(rcpt.lower())
        rows = self._db.execute(query + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()
        columns = ("id", "at", "mail_from", "rcpt", "code", "reply")
        return [dict(zip(columns, r, strict=True)) for r in rows]

    def clear(self) -> int:
        """Forget every mail and refusal; return how many mails were dropped."""
        with self._db:
            self._db.execute("BEGIN")
            (count,) = self._db.execute("SELECT count(*) FROM messages").fetchone()
            self._db.execute("DELETE FROM recipients")
            self._db.execute("DELETE FROM messages")
            self._db.execute("DELETE FROM refusals")
        return int(count)
