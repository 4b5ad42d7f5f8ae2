"""The dispatcher process: the processor that owns the commands topic's partitions and decides
every command and tick of their messages (services/dispatcher/processor.py), with its health.
"""

from __future__ import annotations

import asyncio

from services.common.checks import KafkaCheck
from services.common.settings import Settings
from services.common.topics import ensure_topics
from services.common.worker import run_worker
from services.dispatcher.processor import Processor

SERVICE = "dispatcher"


async def serve(settings: Settings) -> None:
    kafka = KafkaCheck(settings.kafka_bootstrap_servers)

    async def main(stop: asyncio.Event) -> None:
        topics = await ensure_topics(settings)
        await Processor(settings, topics).run(stop)

    await run_worker(
        SERVICE,
        host=settings.bind_host,
        port=settings.dispatcher_health_port,
        checks={"kafka": kafka},
        check_timeout=settings.health_check_timeout,
        main=main,
        closers=[kafka.close],
    )
