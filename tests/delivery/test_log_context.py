"""The delivery worker binds its ids once per unit of work (structlog contextvars, docs/
delivery.md): a line logged inside a partition's batch carries the partition, one logged for a
record its offset, one logged for a send its message and send ids; nothing stays bound after."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import ConsumerRecord, TopicPartition

from schemas import Contact, Content
from schemas.sends import SendRecord
from services.common.settings import Settings
from services.common.topics import Topics
from services.delivery.ledger import Claim, Outcome
from services.delivery.worker import DeliveryWorker, Owned

TOPIC = "t.sends"


class ClaimAll:
    """A ledger that claims every send (no Postgres) and keeps the outcomes it is given."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    async def claim(
        self, topic: str, partition: int, epoch: int, claims: Sequence[Claim], state: str = ""
    ) -> set[str]:
        return {c.send_id for c in claims}

    async def record(
        self, topic: str, partition: int, epoch: int, outcomes: Sequence[Outcome]
    ) -> None:
        self.outcomes.extend(outcomes)


class Producer:
    """Takes the dead letters (no Kafka)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_and_wait(self, topic: str, value: bytes, **_: Any) -> None:
        self.sent.append(value)


def record(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TOPIC, 3, offset, 0, 0, None, value, None, 0, len(value), [])


async def test_lines_of_a_batch_carry_the_partition_and_the_record_or_send_they_speak_of() -> None:
    worker = DeliveryWorker(Settings(), Topics("t"))
    ledger, producer = ClaimAll(), Producer()
    worker._ledger = ledger  # type: ignore[assignment]
    worker._producer = producer  # type: ignore[assignment]
    worker._pool = object()  # type: ignore[assignment]  # never reached: nothing composes
    worker.owned[3] = Owned(3, 1)
    message = uuid.uuid4()
    # A subject with a header injection: the mail cannot be composed, the send is failed.
    worker.contents[str(message)] = Content(
        name="N", from_address="n@example.org", subject="Hi {{x}}", body="b"
    )
    send = SendRecord(
        send_id=uuid.uuid4(),
        message_id=message,
        account_id="a",
        released_at=datetime.now(UTC),
        release_sequence=2,
        contact=Contact(contact_id="c", email="c@example.org", attributes={"x": "a\r\nBcc: e"}),
    )
    records = [record(10, b"not a send"), record(11, send.model_dump_json().encode())]

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as lines:
        done = await worker._partition_batch(TopicPartition(TOPIC, 3), records)

    assert done == (TopicPartition(TOPIC, 3), 12)
    [dead] = [line for line in lines if line["event"] == "send record dead-lettered"]
    assert (dead["partition"], dead["offset"]) == (3, 10)
    [failed] = [line for line in lines if line["event"] == "send failed"]
    assert failed["partition"] == 3
    assert failed["message_id"] == str(message)
    assert failed["send_id"] == str(send.send_id)
    assert "offset" not in failed  # the offset of the dead letter did not leak to the send
    assert [o.state for o in ledger.outcomes] == ["failed"]
    assert structlog.contextvars.get_contextvars() == {}  # unbound after the unit of work
