"""The connection options of a bench or test Kafka client: `client_options`
(services/common/kafka.py) for a given bootstrap address, logged in as the environment says
(scripts/with_env.sh exports the admin principal for the broker the scripts run); and `committed`,
a topic's committed records read once from the beginning to its current end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import ConsumerRecord

from services.common.kafka import client_options
from services.common.reading import read_range
from services.common.settings import Settings


def kafka_options(bootstrap: str) -> dict[str, Any]:
    return client_options(Settings(kafka_bootstrap_servers=bootstrap))


async def committed(
    bootstrap: str, topic: str, partitions: Iterable[int]
) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """Every committed record of `partitions` of `topic`, partition after partition, each from
    the beginning to the end it had when its read began, in log order: the services' own reader
    (services/common/reading.py `read_range`), streamed, so a topic of millions of records is
    never held at once."""
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    for partition in partitions:
        async for found in read_range(settings, topic, partition):
            yield found
