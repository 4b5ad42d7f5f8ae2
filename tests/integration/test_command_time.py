"""Time is the service's: a command published on the topic is decided at the instant the broker
appended it (a LogAppendTime commands topic), never at the publisher's issued_at; a commands
topic that keeps its producers' timestamps is corrected, and a record stamped by a producer is
refused with an answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bench.harness.processor import CONTENT, Stack, ids, record
from schemas import CreateDraft, ScheduleMessage
from services.common.kafka import client_options
from services.common.topics import TIMESTAMP_TYPE

TWO_DAYS_AGO = timedelta(days=-2)


async def test_a_command_issued_two_days_ago_is_decided_at_the_services_time(stack: Stack) -> None:
    """Given commands published on the topic with an issued_at two days in the past, when the
    processor decides them, then a send time in the past (one day ago, after the forged
    issued_at) is refused, and the events occurred at the service's time, not at issued_at."""
    stack.spawn()
    message = ids()
    forged = datetime.now(UTC) + TWO_DAYS_AGO
    before = datetime.now(UTC) - timedelta(seconds=1)

    created, scheduled = await stack.decide(
        record(CreateDraft(command_id=ids(), message_id=message, content=CONTENT), at=forged),
        record(
            ScheduleMessage(
                command_id=ids(), message_id=message, send_at=forged + timedelta(days=1)
            ),
            at=forged,
        ),
    )

    after = datetime.now(UTC) + timedelta(seconds=1)
    assert created.outcome == "accepted"
    assert scheduled.outcome == "rejected"
    assert scheduled.rejection is not None and scheduled.rejection.field == "send_at"
    [draft] = await stack.events_of(message)
    assert before <= draft.occurred_at <= after, draft.occurred_at


async def _timestamp_type(stack: Stack, topic: str) -> str:
    admin = AIOKafkaAdminClient(**client_options(stack.settings))
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={TIMESTAMP_TYPE: None})
        (response,) = await admin.describe_configs([resource])
        [entry] = response.to_object()["resources"][0]["config_entries"]
        value: str = entry["config_value"]
        return value
    finally:
        await admin.close()


async def test_a_producer_stamped_commands_topic_is_corrected_and_its_stamped_record_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Given a commands topic created with CreateTime (the producers' clocks) and a command
    published on it, when the processor starts, then the topic is set to LogAppendTime; the
    command stamped by its producer is refused with a rejected result naming the reason, and a
    command published afterwards is decided."""
    stack = Stack(kafka_bootstrap, tmp_path, simulated_time=True)
    await stack.start()
    try:
        assert await _timestamp_type(stack, stack.topics.commands) == "CreateTime"
        message = ids()
        stamped = record(CreateDraft(command_id=ids(), message_id=message, content=CONTENT))
        await stack.publish(stamped)

        stack.spawn(KAFKA_COMMANDS_TIMESTAMP_TYPE="LogAppendTime")

        refused = await stack.result_of(stamped.command.command_id)
        assert refused.outcome == "rejected" and not refused.decided
        assert refused.rejection is not None
        assert "UntrustedTimeError" in refused.rejection.message
        assert await _timestamp_type(stack, stack.topics.commands) == "LogAppendTime"
        again = record(CreateDraft(command_id=ids(), message_id=message, content=CONTENT))
        [accepted] = await stack.decide(again)
        assert accepted.outcome == "accepted"
        assert [e.type for e in await stack.events_of(message)] == ["DraftCreated"]
    finally:
        await stack.close()
