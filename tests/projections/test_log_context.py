"""The projection consumer binds its ids once per unit of work, one record (structlog
contextvars, docs/projections.md): a line logged while folding it carries the partition and the
offset, and the message id and event type once it is decoded; nothing stays bound after."""

from __future__ import annotations

import structlog
from aiokafka import ConsumerRecord

from bench.harness.histories import Simulator
from schemas.codec import encode
from services.projections.consumer import Partition, apply_record

TOPIC = "t.events"


def record(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TOPIC, 5, offset, 0, 0, None, value, None, 0, len(value), [])


def test_a_line_logged_for_a_record_carries_its_partition_offset_and_message() -> None:
    sim = Simulator()
    message = sim.create()
    [created] = sim.events
    part = Partition(5, 0)

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as lines:
        apply_record(part, record(0, b"not an event"))
        apply_record(part, record(1, encode(created)))
        apply_record(part, record(2, encode(created)))  # again: out of order, refused

    undecodable, refused = (line for line in lines if line["event"] == "event dead-lettered")
    assert (undecodable["partition"], undecodable["offset"]) == (5, 0)
    assert "message_id" not in undecodable  # not decoded: no message to name
    assert (refused["partition"], refused["offset"]) == (5, 2)
    assert refused["message_id"] == str(message)
    assert refused["event_type"] == created.type
    assert part.pending is not None and part.pending.next_offset == 3
    assert structlog.contextvars.get_contextvars() == {}  # unbound after the unit of work
