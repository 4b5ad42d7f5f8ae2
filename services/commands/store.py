"""The API's Postgres side: API keys, idempotency rows and account settings (migrations 0002,
0003), behind one lazily opened pool."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg

from services.commands.apikeys import account_for, set_time_zone, time_zone
from services.commands.ports import Claim
from services.common.pool import LazyPool

_COLUMNS = "fingerprint, command_id, message_id, response_status, response_body"


def _claim(row: asyncpg.Record) -> Claim:
    body = row["response_body"]
    return Claim(
        fingerprint=row["fingerprint"],
        command_id=row["command_id"],
        message_id=row["message_id"],
        response_status=row["response_status"],
        response_body=None if body is None else json.loads(body),
    )


class PostgresStore(LazyPool):
    """Implements both `KeyStore` and `IdempotencyStore` (services/commands/ports.py).

    The pool is opened, and the schema brought up to date, on first use: the API starts and
    reports its health even while Postgres is still coming up.
    """

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, max_size=16)

    async def account_for(self, key: str) -> str | None:
        return await account_for(await self.pool(), key)

    async def claim(
        self, account: str, key: str, fingerprint: str, command_id: UUID, message_id: UUID
    ) -> Claim:
        pool = await self.pool()
        row = await pool.fetchrow(
            "INSERT INTO idempotency_keys"
            " (account_id, idempotency_key, fingerprint, command_id, message_id)"
            " VALUES ($1, $2, $3, $4, $5)"
            f" ON CONFLICT (account_id, idempotency_key) DO NOTHING RETURNING {_COLUMNS}",
            account,
            key,
            fingerprint,
            command_id,
            message_id,
        )
        if row is None:
            # Taken. A separate statement: a concurrent first try's row is only visible to a
            # snapshot taken after its commit (which ON CONFLICT waited for), not to the
            # insert's own snapshot.
            row = await pool.fetchrow(
                f"SELECT {_COLUMNS} FROM idempotency_keys"
                " WHERE account_id = $1 AND idempotency_key = $2",
                account,
                key,
            )
        assert row is not None  # rows are never deleted
        return _claim(row)

    async def answer(self, command_id: UUID, status: int, body: Any) -> None:
        # `response_status IS NULL`: the first answer stands (a late background answer and a
        # retry's answer carry the same result anyway: the processor repeats its first).
        await (await self.pool()).execute(
            "UPDATE idempotency_keys SET response_status = $2, response_body = $3::jsonb,"
            " answered_at = now() WHERE command_id = $1 AND response_status IS NULL",
            command_id,
            status,
            json.dumps(body),
        )

    async def outcome(self, account: str, command_id: UUID) -> Claim | None:
        row = await (await self.pool()).fetchrow(
            f"SELECT {_COLUMNS} FROM idempotency_keys WHERE account_id = $1 AND command_id = $2",
            account,
            command_id,
        )
        return None if row is None else _claim(row)

    async def default_time_zone(self, account: str) -> str:
        return await time_zone(await self.pool(), account)

    async def set_default_time_zone(self, account: str, zone: str) -> None:
        async with (await self.pool()).acquire() as conn:
            await set_time_zone(conn, account, zone)
