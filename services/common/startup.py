"""Start-up of a worker whose servers may come up after it: retry with backoff until Kafka's
topics are in place and the Postgres schema is up to date, or until the process is told to
stop. Meanwhile /health says what is wrong; the process does not exit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations
from services.common.settings import Settings
from services.common.topics import ensure_topics

log = structlog.get_logger(__name__)

#: What a server that is not there yet raises.
NOT_READY = (KafkaError, OSError, TimeoutError, asyncpg.PostgresError)


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def until_ready(
    stop: asyncio.Event, what: str, step: Callable[[], Awaitable[None]], max_delay: float = 10.0
) -> bool:
    """Run `step` until it succeeds (True) or `stop` is set (False), backing off from 0.2 s."""
    delay = 0.2
    while not stop.is_set():
        try:
            await step()
            return True
        except NOT_READY as error:
            log.warning(f"{what} not ready, retrying", error=repr(error), retry_in_s=delay)
            await sleep_unless_stopped(stop, delay)
            delay = min(delay * 2, max_delay)
    return False


async def topics_when_reachable(settings: Settings, stop: asyncio.Event) -> bool:
    """The service's topics exist with the configured partition count."""

    async def step() -> None:
        await ensure_topics(settings)

    return await until_ready(stop, "kafka", step)


async def migrate_when_reachable(dsn: str, stop: asyncio.Event) -> bool:
    """The Postgres schema is up to date (the migrations are applied under an advisory lock, so
    every process may do it at start)."""
    migrations = load_migrations(MIGRATIONS_DIR)

    async def step() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            applied = await apply_migrations(conn, migrations)
        finally:
            await conn.close()
        log.info(
            "schema up to date",
            applied=[m.version for m in applied],
            latest=migrations[-1].version if migrations else None,
        )

    return await until_ready(stop, "postgres", step, max_delay=5.0)
