"""No single send or helper step ends the delivery worker (services/delivery/worker.py):
what cannot be composed is failed with its reason before SMTP is asked; a helper step that
raises is counted, shown in the status, and the loop runs its next step. The same against the
real stack: tests/integration/test_delivery_input.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from schemas import Contact, Content
from schemas.sends import SendRecord
from schemas.text import STORED
from services.common.settings import Settings
from services.common.topics import Topics
from services.delivery.ledger import Reportable
from services.delivery.mail import Mail
from services.delivery.smtp import Answer, Fence, SmtpPool
from services.delivery.worker import DeliveryWorker


class RecordingPool(SmtpPool):
    """A pool that answers 250 without a server, and remembers what it was handed."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 1, 1, 1.0)
        self.handed: list[Mail] = []

    async def deliver(self, mail: Mail, fence: Fence | None = None) -> Answer:
        self.handed.append(mail)
        return Answer("delivered", "250 ok")


def worker_with(content: Content) -> tuple[DeliveryWorker, RecordingPool, uuid.UUID]:
    worker = DeliveryWorker(Settings(), Topics("t"))
    pool = RecordingPool()
    worker._pool = pool
    message = uuid.uuid4()
    worker.contents[str(message)] = content
    return worker, pool, message


def send(message: uuid.UUID, contact: Contact) -> SendRecord:
    return SendRecord(
        send_id=uuid.uuid4(),
        message_id=message,
        account_id="a",
        released_at=datetime.now(UTC),
        release_sequence=2,
        contact=contact,
    )


async def test_a_send_that_cannot_be_composed_is_failed_and_the_others_are_handed_over() -> None:
    content = Content(name="N", from_address="n@example.org", subject="Hi {{x}}", body="")
    worker, pool, message = worker_with(content)
    bad = Contact(contact_id="bad", email="b@example.org", attributes={"x": "a\r\nBcc: c@d.org"})
    old = Contact.model_validate(
        {"contact_id": "old", "email": "o\x00@example.org"}, context=STORED
    )
    good = Contact(contact_id="good", email="g@example.org", attributes={"x": "there"})

    answers = await asyncio.gather(*(worker._hand_off(send(message, c)) for c in (bad, old, good)))

    assert [a.verdict for a in answers] == ["failed", "failed", "delivered"]
    assert "the Subject header is refused" in answers[0].detail
    assert "the To header is refused" in answers[1].detail
    assert [m.rcpt_to for m in pool.handed] == ["g@example.org"]


async def test_a_helper_step_that_raises_is_counted_and_the_loop_goes_on() -> None:
    worker = DeliveryWorker(Settings(), Topics("t"))
    stop = asyncio.Event()
    calls: list[int] = []

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("one bad row")
        stop.set()

    await asyncio.wait_for(worker._every(stop, 0.0, step), 10)

    assert calls == [0, 1]
    assert worker.status()["helper_errors"] == 1
    assert worker.status()["last_helper_error"] == "RuntimeError: one bad row"


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[None]:
        self.sent.append(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_outcomes_that_cannot_be_published_never_hold_up_another_message() -> None:
    worker = DeliveryWorker(Settings(), Topics("t"))
    producer = RecordingProducer()
    worker._producer = producer  # type: ignore[assignment]
    bad, good = str(uuid.uuid4()), str(uuid.uuid4())
    await worker._publish_outcomes(
        {
            (bad, "acct\x01"): [Reportable("s1", bad, "acct\x01", "c1", "delivered", None)],
            (good, "acct-b"): [Reportable("s2", good, "acct-b", "c2", "delivered", None)],
        }
    )
    assert producer.sent == [good.encode()]
