"""The dispatcher process. It will run the stream processor that turns the event history and
the recorded clock ticks into per-recipient sends; until that lands it only reports whether the
Kafka it will consume from is reachable.
"""

from __future__ import annotations

from services.common.checks import KafkaCheck
from services.common.settings import Settings
from services.common.worker import run_worker

SERVICE = "dispatcher"


async def serve(settings: Settings) -> None:
    kafka = KafkaCheck(settings.kafka_bootstrap_servers)
    await run_worker(
        SERVICE,
        host=settings.bind_host,
        port=settings.dispatcher_health_port,
        checks={"kafka": kafka},
        check_timeout=settings.health_check_timeout,
        closers=[kafka.close],
    )
