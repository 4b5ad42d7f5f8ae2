"""One lazily opened asyncpg pool: the piece behind every Postgres store of the commands process
(API keys and idempotency rows, the web UI's operators and sessions, the read views).

Opened on first use, not at start-up: the process starts and reports its health while Postgres
is still coming up. A store that owns tables opens its pool with ``migrate=True``: the schema is
brought up to date (``services/common/sql``, idempotent and safe against a concurrent runner)
before the first query, so no query runs against tables of an older version.
"""

from __future__ import annotations

import asyncio

import asyncpg

from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations

__all__ = ["LazyPool", "keep_session"]


async def keep_session(_: asyncpg.Connection) -> None:
    """A pool's `reset`: nothing. asyncpg's default sends a reset query (UNLISTEN, RESET ALL,
    advisory unlock) each time a connection goes back to the pool: one more round trip for
    every query, and these pools' connections hold no session state (the migrations release
    their advisory lock themselves). An open transaction is still rolled back by asyncpg."""


class LazyPool:
    """An asyncpg pool of `dsn`, opened (and, with `migrate`, the schema migrated) on first use.

    A store subclasses it and queries through :meth:`pool`; :meth:`close` closes the pool, and
    the next :meth:`pool` opens a new one.
    """

    def __init__(self, dsn: str, *, max_size: int = 4, migrate: bool = True) -> None:
        self.dsn = dsn
        self.max_size = max_size
        self.migrate = migrate
        self._pool: asyncpg.Pool | None = None
        # One opener at a time: two first queries at once would open (and migrate) twice.
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                pool = await asyncpg.create_pool(
                    self.dsn, min_size=1, max_size=self.max_size, reset=keep_session
                )
                if self.migrate:
                    try:
                        async with pool.acquire() as conn:
                            await apply_migrations(conn, load_migrations(MIGRATIONS_DIR))
                    except BaseException:
                        # Not handed out half-ready: the next call opens and migrates again.
                        await pool.close()
                        raise
                self._pool = pool
            return self._pool

    async def close(self) -> None:
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
