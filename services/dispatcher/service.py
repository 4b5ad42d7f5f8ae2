"""The dispatcher process: the processor that owns the commands topic's partitions and decides
every command and tick of their messages (services/dispatcher/processor.py), the intake relay
that admits integrating services' commands (services/dispatcher/intake.py), with their health.
"""

from __future__ import annotations

import asyncio

import structlog

from services.common.checks import KafkaCheck
from services.common.health import Check, PartitionChecks
from services.common.settings import Settings
from services.common.startup import topics_when_reachable
from services.common.topics import Topics
from services.common.worker import run_worker
from services.dispatcher.intake import IntakeRelay
from services.dispatcher.processor import Processor

SERVICE = "dispatcher"

log = structlog.get_logger(__name__)


#: A partition whose input lags by more than this many records fails its health entry.
MAX_LAG = 10_000


def health_checks(
    kafka: KafkaCheck, processor: Processor, relay: IntakeRelay | None = None
) -> PartitionChecks:
    """Kafka, the processor, the intake relay (when enabled), and one `partition-N` entry per
    assigned partition (failing while it is not taken, or past MAX_LAG records of lag)."""
    checks: dict[str, Check] = {"kafka": kafka, "processor": processor.check}
    if relay is not None:
        checks["intake"] = relay.check
    return PartitionChecks(
        checks,
        processor.ownership.assigned,
        lambda n: processor.ownership.problem(n, MAX_LAG),
    )


async def serve(settings: Settings) -> None:
    kafka = KafkaCheck(settings)
    topics = Topics(settings.topic_prefix)
    processor = Processor(settings, topics)
    relay = IntakeRelay(settings, topics) if settings.intake_enabled else None

    async def main(stop: asyncio.Event) -> None:
        if await topics_when_reachable(settings, stop):
            if relay is None:
                await processor.run(stop)
            else:
                await asyncio.gather(processor.run(stop), relay.run(stop))

    await run_worker(
        SERVICE,
        host=settings.bind_host,
        port=settings.dispatcher_health_port,
        checks=health_checks(kafka, processor, relay),
        check_timeout=settings.health_check_timeout,
        main=main,
        closers=[kafka.close],
        details=("processor", processor.status),
    )
