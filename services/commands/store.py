"""The API's Postgres side: idempotency rows and account settings (migration 0003)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class Claim:
    """The idempotency row of a request: ours if just created, or the one a first try left."""

    fingerprint: str
    command_id: UUID
    message_id: UUID
    response_status: int | None
    response_body: Any


class IdempotencyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(
        self, account: str, key: str, fingerprint: str, command_id: UUID, message_id: UUID
    ) -> Claim:
        """Insert the row unless the key is taken; either way return the row that stands."""
        row = await self.pool.fetchrow(
            """
            WITH inserted AS (
                INSERT INTO idempotency_keys
                    (account_id, idempotency_key, fingerprint, command_id, message_id)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (account_id, idempotency_key) DO NOTHING
                RETURNING fingerprint, command_id, message_id, response_status, response_body
            )
            SELECT * FROM inserted
            UNION ALL
            SELECT fingerprint, command_id, message_id, response_status, response_body
            FROM idempotency_keys WHERE account_id = $1 AND idempotency_key = $2
            LIMIT 1
            """,
            account,
            key,
            fingerprint,
            command_id,
            message_id,
        )
        assert row is not None  # inserted, or there already
        body = row["response_body"]
        return Claim(
            fingerprint=row["fingerprint"],
            command_id=row["command_id"],
            message_id=row["message_id"],
            response_status=row["response_status"],
            response_body=None if body is None else json.loads(body),
        )

    async def answer(self, command_id: UUID, status: int, body: Any) -> None:
        """Store a command's response once: the first answer stands."""
        await self.pool.execute(
            "UPDATE idempotency_keys SET response_status = $2, response_body = $3::jsonb,"
            " answered_at = now() WHERE command_id = $1 AND response_status IS NULL",
            command_id,
            status,
            json.dumps(body),
        )

    async def outcome(self, account: str, command_id: UUID) -> Claim | None:
        row = await self.pool.fetchrow(
            "SELECT fingerprint, command_id, message_id, response_status, response_body"
            " FROM idempotency_keys WHERE account_id = $1 AND command_id = $2",
            account,
            command_id,
        )
        if row is None:
            return None
        body = row["response_body"]
        return Claim(
            row["fingerprint"],
            row["command_id"],
            row["message_id"],
            row["response_status"],
            None if body is None else json.loads(body),
        )

    async def default_time_zone(self, account: str) -> str:
        zone = await self.pool.fetchval(
            "SELECT default_time_zone FROM accounts WHERE account_id = $1", account
        )
        return str(zone) if zone else "UTC"
