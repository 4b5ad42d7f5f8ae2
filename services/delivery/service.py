"""The delivery worker process: the worker (services/delivery/worker.py) with its
health: Kafka, Postgres, the SMTP server, the worker itself and one entry per owned partition."""

from __future__ import annotations

import asyncio

import structlog

from services.common.checks import KafkaCheck, PostgresCheck, SmtpCheck
from services.common.health import PartitionChecks
from services.common.settings import Settings
from services.common.startup import migrate_when_reachable, topics_when_reachable
from services.common.topics import Topics
from services.common.worker import run_worker
from services.delivery.worker import DeliveryWorker

SERVICE = "delivery"
#: A partition whose sends wait unread beyond this many records fails its health entry.
MAX_LAG = 50_000

log = structlog.get_logger(__name__)


async def serve(settings: Settings) -> None:
    kafka = KafkaCheck(settings)
    postgres = PostgresCheck(settings.database_url)
    smtp = SmtpCheck(settings.smtp_host, settings.smtp_port)
    worker = DeliveryWorker(settings, Topics(settings.topic_prefix))

    async def main(stop: asyncio.Event) -> None:
        if await topics_when_reachable(settings, stop) and await migrate_when_reachable(
            settings.database_url, stop
        ):
            await worker.run(stop)

    await run_worker(
        SERVICE,
        host=settings.bind_host,
        port=settings.delivery_health_port,
        checks=PartitionChecks(
            {"kafka": kafka, "postgres": postgres, "smtp": smtp, "worker": worker.check},
            worker.ownership.assigned,
            lambda n: worker.ownership.problem(n, MAX_LAG, "sends"),
        ),
        check_timeout=settings.health_check_timeout,
        main=main,
        closers=[kafka.close, postgres.close],
        details=("delivery", worker.status),
    )
