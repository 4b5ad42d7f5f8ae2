"""Authentication of API requests: `Authorization: Bearer <key>` names exactly one account.

Every endpoint that reads or changes a message depends on `Authenticator.account`, so a request
without a live key never reaches a handler (401), and a handler only ever sees its own account.
"""

from __future__ import annotations

import asyncio

import asyncpg
from fastapi import HTTPException, Request

from services.commands.apikeys import account_for
from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations


class Authenticator:
    """Checks keys against the api_keys table through a pool opened on first use (so the API
    starts, and reports its health, even while Postgres is still coming up)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        """The API's connection pool, opened (and the schema brought up to date) on first use."""
        async with self._lock:
            if self._pool is None:
                pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=8)
                async with pool.acquire() as conn:
                    await apply_migrations(conn, load_migrations(MIGRATIONS_DIR))
                self._pool = pool
            return self._pool

    async def account(self, request: Request) -> str:
        """FastAPI dependency: the caller's account, or 401 with the reason."""
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise HTTPException(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        account = await account_for(await self.pool(), key.strip())
        if account is None:
            raise HTTPException(
                401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        return account

    async def close(self) -> None:
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
