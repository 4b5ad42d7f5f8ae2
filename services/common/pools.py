"""asyncpg pools of the request paths (the commands API's store, the read API's views)."""

from __future__ import annotations

import asyncpg


async def keep_session(_: asyncpg.Connection) -> None:
    """A pool's `reset`: nothing. asyncpg's default sends a reset query (UNLISTEN, RESET ALL,
    advisory unlock) each time a connection goes back to the pool: one more round trip for
    every query of the API, whose connections hold no session state (the migrations release
    their advisory lock themselves). An open transaction is still rolled back by asyncpg."""
