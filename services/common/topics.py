"""The service's Kafka topics: their names and their creation (docs/architecture.md).

Every topic has the same partition count, so a message id lands in the same partition number of
each (co-partitioning), and keeps its records forever: `retention.ms=-1`, `cleanup.policy=delete`
(never compacted: history is kept for audits and replays).

The commands topic also stamps its records with the broker's clock
(`message.timestamp.type=LogAppendTime`): the processor decides each command at its record's
timestamp, so the time of a decision is the service's and is in the log (a replay agrees), never
the publisher's `issued_at`. `ensure_topics` corrects an existing commands topic that says
otherwise (docs/dispatcher.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from services.common.kafka import client_options
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

    def intake(self, principal: str) -> str:
        """The one topic an integrating service may write: its commands, for the intake relay."""
        return f"{self.prefix}.intake.{principal}"

    def intake_results(self, principal: str) -> str:
        """The answers to an integrating service's commands, and only to its own (the one
        results topic holds every account's): written by the dispatcher, read by it alone."""
        return f"{self.prefix}.intake-results.{principal}"

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


#: The topic config that says whose clock stamps a record.
TIMESTAMP_TYPE = "message.timestamp.type"


def topic_configs(settings: Settings, topics: Topics) -> dict[str, dict[str, str]]:
    """The config every topic is created with (and the commands topic is corrected to)."""
    common = {
        "retention.ms": "-1",
        "cleanup.policy": "delete",
        "max.message.bytes": str(settings.max_record_bytes),
    }
    configs = {topic: dict(common) for topic in topics.all}
    configs[topics.commands][TIMESTAMP_TYPE] = settings.kafka_commands_timestamp_type
    if settings.kafka_commands_timestamp_type == "CreateTime":
        # A replay or a simulated scenario stamps its commands at any instant, later ones too:
        # Kafka 4 refuses a CreateTime more than an hour ahead of the broker's clock by default.
        configs[topics.commands]["message.timestamp.after.max.ms"] = str(2**63 - 1)
    return configs


async def ensure_topics(settings: Settings) -> Topics:
    """Create the topics that are missing; check the partition count of those that exist, and
    the timestamp type of the commands topic."""
    topics = Topics(settings.topic_prefix)
    configs = topic_configs(settings, topics)
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics.all if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            t,
                            settings.kafka_partitions,
                            settings.kafka_replication_factor,
                            topic_configs=configs[t],
                        )
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
        await _correct_timestamp_type(admin, topics.commands, configs[topics.commands])
    finally:
        await admin.close()
    return topics


async def _correct_timestamp_type(
    admin: AIOKafkaAdminClient, topic: str, wanted: dict[str, str]
) -> None:
    """A commands topic created before the service stamped commands itself (or by hand) is set
    to the wanted timestamp type. AlterConfigs replaces the topic's whole dynamic config, so it
    is given the service's full set (the one it creates topics with)."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={TIMESTAMP_TYPE: None})
    (described,) = await admin.describe_configs([resource])
    current = _config_value(described.to_object(), topic, TIMESTAMP_TYPE)
    if current == wanted[TIMESTAMP_TYPE]:
        return
    corrected = ConfigResource(ConfigResourceType.TOPIC, topic, configs=wanted)
    (altered,) = await admin.alter_configs([corrected])
    for entry in altered.to_object()["resources"]:
        if entry["error_code"]:
            raise TopicLayoutError(
                f"{topic}: cannot set {TIMESTAMP_TYPE}={wanted[TIMESTAMP_TYPE]} "
                f"(error {entry['error_code']}: {entry['error_message']})"
            )
    log.warning(
        "commands topic timestamp type corrected",
        topic=topic,
        was=current,
        now=wanted[TIMESTAMP_TYPE],
    )


def _config_value(response: dict[str, Any], topic: str, name: str) -> str | None:
    for resource in response["resources"]:
        if resource["resource_name"] != topic:
            continue
        if resource["error_code"]:
            raise TopicLayoutError(
                f"{topic}: cannot read its config (error {resource['error_code']}: "
                f"{resource['error_message']})"
            )
        for entry in resource["config_entries"]:
            if entry["config_names"] == name:
                value: str | None = entry["config_value"]
                return value
    return None
