"""The dispatcher process: the processor that owns the commands topic's partitions and decides
every command and tick of their messages (services/dispatcher/processor.py), with its health.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping

import structlog
from aiokafka.errors import KafkaError

from services.common.checks import KafkaCheck
from services.common.health import Check
from services.common.settings import Settings
from services.common.topics import Topics, ensure_topics
from services.common.worker import run_worker
from services.dispatcher.processor import Processor

SERVICE = "dispatcher"

log = structlog.get_logger(__name__)


class HealthChecks(Mapping[str, Check]):
    """The checks /health runs: Kafka, the processor, and one entry per owned partition.

    Read at every request, so the report lists the partitions this process owns at that moment
    (`"partition-3": {"ok": true, ...}`); a partition's entry fails when its consumption lags
    by more than `max_lag` records."""

    def __init__(self, kafka: KafkaCheck, processor: Processor, max_lag: int = 10_000) -> None:
        self.kafka = kafka
        self.processor = processor
        self.max_lag = max_lag

    def _partition_check(self, number: int) -> Check:
        async def check() -> None:
            lag = self.processor.status()["lag"].get(str(number))
            if lag is not None and lag > self.max_lag:
                raise RuntimeError(f"lag {lag} records")

        return check

    def _all(self) -> dict[str, Check]:
        checks: dict[str, Check] = {"kafka": self.kafka, "processor": self.processor.check}
        for number in self.processor.owned():
            checks[f"partition-{number}"] = self._partition_check(number)
        return checks

    def __getitem__(self, name: str) -> Check:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


async def serve(settings: Settings) -> None:
    kafka = KafkaCheck(settings.kafka_bootstrap_servers)
    processor = Processor(settings, Topics(settings.topic_prefix))

    async def main(stop: asyncio.Event) -> None:
        # Kafka may come up after us: keep trying (the health endpoint says what is wrong)
        # rather than exit.
        delay = 0.5
        while not stop.is_set():
            try:
                await ensure_topics(settings)
                break
            except (KafkaError, OSError) as error:
                log.warning("kafka not ready, retrying", error=repr(error), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
        else:
            return
        await processor.run(stop)

    await run_worker(
        SERVICE,
        host=settings.bind_host,
        port=settings.dispatcher_health_port,
        checks=HealthChecks(kafka, processor),
        check_timeout=settings.health_check_timeout,
        main=main,
        closers=[kafka.close],
    )
