"""The projections process. For now it brings the schema up to date and reports its health; the
read views (Sent, Scheduled, Drafts, Recipients, History) are built here by a later change.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from services.common.checks import KafkaCheck, PostgresCheck
from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations
from services.common.settings import Settings
from services.common.worker import run_worker

SERVICE = "projections"

log = structlog.get_logger(__name__)


class MigrationsPendingError(Exception):
    """Raised by the health check while the schema has not been brought up to date yet."""


class SchemaStatus:
    """Whether this process has brought the schema up to date; doubles as a health check."""

    def __init__(self) -> None:
        self.up_to_date = False

    async def __call__(self) -> None:
        if not self.up_to_date:
            raise MigrationsPendingError("migrations not applied yet")


async def _sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def migrate_when_reachable(dsn: str, stop: asyncio.Event, status: SchemaStatus) -> None:
    """Apply the migrations, waiting for Postgres to answer first (it may start after us)."""
    migrations = load_migrations(MIGRATIONS_DIR)
    delay = 0.2
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            log.warning("postgres not reachable, retrying", error=repr(exc), retry_in_s=delay)
            await _sleep_unless_stopped(stop, delay)
            delay = min(delay * 2, 5.0)
            continue
        try:
            applied = await apply_migrations(conn, migrations)
        finally:
            await conn.close()
        status.up_to_date = True
        log.info(
            "schema up to date",
            applied=[m.version for m in applied],
            latest=migrations[-1].version if migrations else None,
        )
        return


async def serve(settings: Settings) -> None:
    status = SchemaStatus()
    kafka = KafkaCheck(settings.kafka_bootstrap_servers)
    postgres = PostgresCheck(settings.database_url)

    async def main(stop: asyncio.Event) -> None:
        await migrate_when_reachable(settings.database_url, stop, status)
        await stop.wait()

    await run_worker(
        SERVICE,
        host=settings.bind_host,
        port=settings.projections_health_port,
        checks={"postgres": postgres, "kafka": kafka, "migrations": status},
        check_timeout=settings.health_check_timeout,
        main=main,
        closers=[kafka.close, postgres.close],
    )
