"""The dispatcher process: the processor that owns the commands topic's partitions and decides
every command and tick of their messages (services/dispatcher/processor.py), with its health.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka.errors import KafkaError

from services.common.checks import KafkaCheck
from services.common.settings import Settings
from services.common.topics import ensure_topics
from services.common.worker import run_worker
from services.dispatcher.processor import Processor

SERVICE = "dispatcher"

log = structlog.get_logger(__name__)


async def serve(settings: Settings) -> None:
    kafka = KafkaCheck(settings.kafka_bootstrap_servers)

    async def main(stop: asyncio.Event) -> None:
        # Kafka may come up after us: keep trying (the health endpoint says what is wrong)
        # rather than exit.
        delay = 0.5
        while not stop.is_set():
            try:
                topics = await ensure_topics(settings)
                break
            except (KafkaError, OSError) as error:
                log.warning("kafka not ready, retrying", error=repr(error), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
        else:
            return
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
