"""The service's Kafka topics: their names and their creation (docs/architecture.md).

Every topic has the same partition count, so a message id lands in the same partition number of
each (co-partitioning), and keeps its records forever: `retention.ms=-1`, `cleanup.policy=delete`
(never compacted: history is kept for audits and replays).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.common.settings import Settings

log = structlog.get_logger(__name__)


class TopicLayoutError(Exception):
    """Raised when an existing topic has another partition count than the service is set for."""


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix (tests use a prefix of their own)."""

    prefix: str

    @property
    def commands(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def results(self) -> str:
        return f"{self.prefix}.command-results"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def sends(self) -> str:
        """Per-recipient send records and message contents, for the delivery worker."""
        return f"{self.prefix}.sends"

    @property
    def control(self) -> str:
        """Fences: a message's pause, resume or cancel, for the delivery workers, written in the
        transaction of the event (docs/delivery.md, "The fence"). Tiny: one record per command."""
        return f"{self.prefix}.control"

    @property
    def all(self) -> tuple[str, ...]:
        return (
            self.commands,
            self.events,
            self.results,
            self.dead_letter,
            self.sends,
            self.control,
        )

    @property
    def delivery_group(self) -> str:
        """The consumer group of the delivery workers that share the sends topic's partitions."""
        return f"{self.prefix}-delivery"

    @property
    def group(self) -> str:
        """The consumer group of the processor that owns the commands topic's partitions."""
        return f"{self.prefix}-dispatcher"

    def transactional_id(self, partition: int) -> str:
        """One transactional id per input partition: a new owner fences the previous one."""
        return f"{self.prefix}-dispatcher-{partition}"


async def ensure_topics(settings: Settings) -> Topics:
    """Create the topics that are missing; check the partition count of those that exist."""
    topics = Topics(settings.topic_prefix)
    config = {
        "retention.ms": "-1",
        "cleanup.policy": "delete",
        "max.message.bytes": str(settings.max_record_bytes),
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics.all if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(t, settings.kafka_partitions, 1, topic_configs=config)
                        for t in missing
                    ]
                )
                log.info("topics created", topics=missing, partitions=settings.kafka_partitions)
            except TopicAlreadyExistsError:
                pass  # another process created them first: the check below still applies
        # A topic just created may show no partitions for a moment, until its metadata has
        # reached the broker that answers: look again rather than judge it.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            described = await admin.describe_topics(list(topics.all))
            counts = {t["topic"]: len(t["partitions"]) for t in described}
            if all(counts.get(t) for t in topics.all):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TopicLayoutError(f"topics without partitions after 30 s: {counts}")
            await asyncio.sleep(0.1)
        for topic, count in counts.items():
            if count != settings.kafka_partitions:
                raise TopicLayoutError(
                    f"{topic} has {count} partitions, the service is set for "
                    f"{settings.kafka_partitions} (KAFKA_PARTITIONS): co-partitioning needs "
                    "them equal"
                )
    finally:
        await admin.close()
    return topics
