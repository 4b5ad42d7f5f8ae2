"""Queries of the read views (asyncpg), for the read API (services/commands/read_api.py).

Every query names the account: a message of another account is as absent as an unknown one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from services.common.pool import LazyPool
from services.projections.views import JSON_COLUMNS, MESSAGE_COLUMNS

__all__ = ["ORDER", "PostgresViews"]

#: How each list is sorted (newest first, except what goes out next first), ties by id.
ORDER = {
    "sent": "coalesce(started_at, send_at, updated_at) DESC, message_id",
    # What goes out first first: the real first release (recipient_timezone: the first zone's
    # due time, which may come hours before or after the send time in the account's zone).
    "scheduled": "coalesce(first_release_at, send_at) ASC, message_id",
    "drafts": "updated_at DESC, message_id",
}


def _message(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    for name in JSON_COLUMNS:
        if out[name] is not None:
            out[name] = json.loads(out[name])
    return out


class PostgresViews(LazyPool):
    """The views in Postgres, behind one lazily opened pool (the API starts without Postgres).

    The views' tables are the projection worker's (it migrates them): the reader does not.
    """

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, max_size=4, migrate=False)

    async def list_messages(
        self,
        account: str,
        view: str,
        statuses: Sequence[str],
        *,
        search: str | None,
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]:
        pool = await self.pool()
        args: list[Any] = [account, list(statuses), limit, offset]
        where = "account_id = $1 AND status = ANY($2::text[])"
        if search:
            args.append(
                "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )
            where += f" AND name ILIKE ${len(args)}"
        rows = await pool.fetch(
            f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM view_messages WHERE {where}"
            f" ORDER BY {ORDER[view]} LIMIT $3 OFFSET $4",
            *args,
        )
        return [_message(r) for r in rows]

    async def message(self, account: str, message_id: UUID) -> dict[str, Any] | None:
        pool = await self.pool()
        row = await pool.fetchrow(
            f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM view_messages"
            " WHERE message_id = $1 AND account_id = $2",
            message_id,
            account,
        )
        return None if row is None else _message(row)

    async def sequence_of(self, account: str, message_id: UUID) -> int | None:
        pool = await self.pool()
        found: int | None = await pool.fetchval(
            "SELECT last_sequence FROM view_messages WHERE message_id = $1 AND account_id = $2",
            message_id,
            account,
        )
        return found

    async def sequences_of(self, keys: list[tuple[str, UUID]]) -> dict[tuple[str, UUID], int]:
        """The last sequence of many messages at once (the read API's waiting reads)."""
        if not keys:
            return {}
        pool = await self.pool()
        rows = await pool.fetch(
            "SELECT m.account_id, m.message_id, m.last_sequence"
            " FROM unnest($1::text[], $2::uuid[]) AS k(account_id, message_id)"
            " JOIN view_messages m ON m.message_id = k.message_id AND m.account_id = k.account_id",
            [account for account, _ in keys],
            [message_id for _, message_id in keys],
        )
        return {(r["account_id"], r["message_id"]): int(r["last_sequence"]) for r in rows}

    async def recipients(
        self,
        account: str,
        message_id: UUID,
        states: Sequence[str] | None,
        *,
        after: str | None,
        limit: int,
        search: str | None = None,
    ) -> list[dict[str, Any]]:
        pool = await self.pool()
        args: list[Any] = [message_id, account, limit]
        where = "r.message_id = $1"
        if search:
            # Address contains (case-insensitive); LIKE's wildcards in the search are literal.
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.append(f"%{escaped}%")
            where += f" AND r.email ILIKE ${len(args)}"
        if states is not None:
            args.append(list(states))
            where += f" AND r.state = ANY(${len(args)}::text[])"
        if after is not None:
            args.append(after)
            where += f" AND r.contact_id > ${len(args)}"
        rows = await pool.fetch(
            "SELECT r.contact_id, r.email, r.time_zone, r.state, r.reason, r.batch, r.added_at,"
            " r.released_at, r.state_at, r.sequence, m.status AS message_status,"
            " d.detail AS refusal"
            " FROM view_recipients r JOIN view_messages m"
            "   ON m.message_id = r.message_id AND m.account_id = $2"
            # A released send that delivery waits to try again after a transient (4xx) refusal:
            # its ledger row is deferred with the refusal (live delivery state, not a view; found
            # by the ledger's unique (message_id, contact_id)).
            " LEFT JOIN delivery_ledger d ON r.state = 'released'"
            "   AND d.message_id = r.message_id::text AND d.contact_id = r.contact_id"
            "   AND d.state = 'deferred'"
            f" WHERE {where} ORDER BY r.contact_id LIMIT $3",
            *args,
        )
        return [dict(r) for r in rows]

    async def draft(self, account: str, message_id: UUID) -> dict[str, Any] | None:
        """The content and plan of the message as its last DraftCreated / DraftEdited event
        holds them (``{"content": ..., "plan": ...}``): what the draft editor shows."""
        pool = await self.pool()
        detail = await pool.fetchval(
            "SELECT h.detail FROM view_history h JOIN view_messages m"
            "   ON m.message_id = h.message_id AND m.account_id = $2"
            " WHERE h.message_id = $1 AND h.type IN ('DraftCreated', 'DraftEdited')"
            " ORDER BY h.sequence DESC LIMIT 1",
            message_id,
            account,
        )
        return None if detail is None else dict(json.loads(detail))

    async def deliveries_per_minute(
        self, account: str, message_id: UUID, *, minutes: int = 60
    ) -> list[tuple[Any, int]]:
        """(minute, deliveries) for the last `minutes` minutes that had any, oldest first: the
        message page's chart. Walks the message's delivered recipients (its primary key)."""
        pool = await self.pool()
        rows = await pool.fetch(
            "SELECT date_trunc('minute', r.state_at) AS minute, count(*) AS n"
            " FROM view_recipients r JOIN view_messages m"
            "   ON m.message_id = r.message_id AND m.account_id = $2"
            " WHERE r.message_id = $1 AND r.state = 'delivered'"
            " GROUP BY 1 ORDER BY 1 DESC LIMIT $3",
            message_id,
            account,
            minutes,
        )
        return [(r["minute"], int(r["n"])) for r in reversed(rows)]

    async def history(
        self, account: str, message_id: UUID, *, after: int, limit: int
    ) -> list[dict[str, Any]]:
        pool = await self.pool()
        rows = await pool.fetch(
            "SELECT h.sequence, h.event_id, h.type, h.occurred_at, h.actor_kind,"
            " h.actor_account_id, h.actor_user_id, h.actor_service, h.actor_display_name,"
            " h.causation_id,"
            " h.correlation_id, h.detail"
            " FROM view_history h JOIN view_messages m"
            "   ON m.message_id = h.message_id AND m.account_id = $2"
            " WHERE h.message_id = $1 AND h.sequence > $3 ORDER BY h.sequence LIMIT $4",
            message_id,
            account,
            after,
            limit,
        )
        out = []
        for r in rows:
            item = dict(r)
            item["detail"] = json.loads(item["detail"])
            out.append(item)
        return out
