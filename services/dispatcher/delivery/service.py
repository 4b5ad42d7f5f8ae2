"""The delivery worker process: the worker (services/dispatcher/delivery/worker.py) with its
health: Kafka, Postgres, the SMTP server, the worker itself and one entry per owned partition."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from services.common.checks import KafkaCheck, PostgresCheck, SmtpCheck
from services.common.health import PartitionChecks, lag_problem
from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations
from services.common.settings import Settings
from services.common.topics import Topics, ensure_topics
from services.common.worker import run_worker
from services.dispatcher.delivery.worker import DeliveryWorker

SERVICE = "delivery"
#: A partition whose sends wait unread beyond this many records fails its health entry.
MAX_LAG = 50_000

log = structlog.get_logger(__name__)


async def _prepare(settings: Settings, stop: asyncio.Event) -> bool:
    """Topics and schema in place (either may come up after us): True when ready."""
    delay = 0.5
    while not stop.is_set():
        try:
            await ensure_topics(settings)
            conn = await asyncpg.connect(settings.database_url, timeout=5)
            try:
                await apply_migrations(conn, load_migrations(MIGRATIONS_DIR))
            finally:
                await conn.close()
            return True
        except (KafkaError, OSError, TimeoutError) as error:
            log.warning("servers not ready, retrying", error=repr(error), retry_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)
    return False


async def serve(settings: Settings) -> None:
    kafka = KafkaCheck(settings.kafka_bootstrap_servers)
    postgres = PostgresCheck(settings.database_url)
    smtp = SmtpCheck(settings.smtp_host, settings.smtp_port)
    worker = DeliveryWorker(settings, Topics(settings.topic_prefix))

    async def main(stop: asyncio.Event) -> None:
        if await _prepare(settings, stop):
            await worker.run(stop)

    await run_worker(
        SERVICE,
        host=settings.bind_host,
        port=settings.delivery_health_port,
        checks=PartitionChecks(
            {"kafka": kafka, "postgres": postgres, "smtp": smtp, "worker": worker.check},
            lambda: worker.owned,
            lambda n: lag_problem(worker.status()["lag"].get(str(n)), MAX_LAG, "sends"),
        ),
        check_timeout=settings.health_check_timeout,
        main=main,
        closers=[kafka.close, postgres.close],
        details=("delivery", worker.status),
    )
