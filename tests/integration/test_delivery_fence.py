"""Issue 12 on the real Kafka, Postgres and SMTP sink: a pause or cancel stops mail at the SMTP
server at once, however many released sends wait in the sends topic.

The sink is slowed for the test's sender (`PUT /slow`: each 250 to DATA comes late) while the
message releases far faster (an explicit large release rate and in-flight window), so a backlog of
more than 20,000 released sends builds. Then a pause (or, separately, a cancel): at most the SMTP
pool's in-flight mails reach the sink after the command was accepted, and nothing afterwards; the
backlog comes back to the message as not sent (returned), shown right in the recipients view; after
the resume every contact gets exactly one mail. And SIGKILLs of the delivery worker right after
the fence and of the dispatcher still leave no contact with two mails.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from uuid import UUID

import pytest

from bench.harness.delivery import DeliveryStack, released
from bench.harness.processor import ids, record
from core import MessageState, MessageStatus, RecipientStatus
from schemas import CancelMessage, Contact, DeliveryPlan, PauseMessage, ResumeMessage
from services.delivery.worker import CLAIM_CHUNK
from tests.projections.tables import project

RECIPIENTS = 24_000
BACKLOG = 20_000
POOL = 8
#: Each 250 to DATA comes this late: 8 connections then take about 40 mails/s.
SLOW_S = 0.2
#: Releases far faster than that: the backlog builds in seconds.
FAST = DeliveryPlan(release_rate=10_000, max_in_flight=1_000_000)


@pytest.fixture
def stack(delivery_stack: DeliveryStack) -> DeliveryStack:
    return delivery_stack


def audience(prefix: str) -> tuple[Contact, ...]:
    return tuple(
        Contact(contact_id=f"{prefix}{i}", email=f"{prefix}{i}@example.org")
        for i in range(RECIPIENTS)
    )


async def slow(stack: DeliveryStack, delay_s: float) -> None:
    assert stack.http is not None
    response = await stack.http.put("/slow", params={"mail_from": stack.sender, "delay_s": delay_s})
    response.raise_for_status()


async def with_backlog(stack: DeliveryStack, message: UUID, prefix: str) -> MessageState:
    """Send the message behind the slow sink; wait until 20,000 released sends await SMTP."""
    await slow(stack, SLOW_S)
    await stack.send_now(message, audience(prefix), FAST)

    async def backlog() -> MessageState | None:
        state = await stack.state(message)
        return state if state.book.outstanding >= BACKLOG else None

    state: MessageState = await stack.wait_for("a backlog of 20,000 sends", backlog, within=180)
    return state


async def settled(stack: DeliveryStack, message: UUID) -> MessageState:
    """Wait until every release has an outcome or came back: the worker reported the returns."""

    async def check() -> MessageState | None:
        state = await stack.state(message)
        return state if state.book.outstanding == 0 else None

    state: MessageState = await stack.wait_for("every release settled", check, within=300)
    return state


async def arrived_after(stack: DeliveryStack, instant: datetime) -> list[str]:
    assert stack.http is not None
    response = await stack.http.get(
        "/deliveries", params={"mail_from": stack.sender, "limit": 100_000}
    )
    response.raise_for_status()
    return [row[2] for row in response.json() if datetime.fromisoformat(row[3]) > instant]


def view_states(events: list[object], message: UUID) -> Counter[str]:
    tables = project(events)  # type: ignore[arg-type]
    return Counter(row["state"] for (m, _), row in tables.recipients.items() if m == message)


async def ledger_states(stack: DeliveryStack, message: UUID) -> Counter[str]:
    return Counter(row["state"] for row in (await stack.ledger(message)).values())


async def test_a_pause_stops_mail_at_the_sink_at_once_and_the_resume_sends_everyone_once(
    stack: DeliveryStack,
) -> None:
    """Given 24,000 recipients released at 10,000/s behind a sink that takes 40 mails/s, when the
    message is paused with more than 20,000 released sends waiting, then at most the pool's 8
    mails in flight reach the sink after the pause was accepted and none once the returns are in;
    the waiting sends come back pending (recipients view: pending, not released; counts exact);
    after the resume every contact has exactly one mail and the returned ones were released
    again exactly once."""
    stack.spawn_dispatcher()
    stack.spawn_delivery(SMTP_POOL_SIZE=str(POOL))
    message = ids()
    before = await with_backlog(stack, message, "p")
    assert view_states(await stack.events_of(message), message)["released"] >= BACKLOG
    assert before.book.counts[RecipientStatus.DELIVERED] < RECIPIENTS - BACKLOG

    await stack.decide(record(PauseMessage(command_id=ids(), message_id=message)))
    accepted = datetime.now(UTC)

    paused = await settled(stack, message)
    late = await arrived_after(stack, accepted)
    assert len(late) <= POOL, f"{len(late)} mails reached the sink after the pause"
    mails = await stack.sink()
    ledger = await ledger_states(stack, message)
    counts = paused.book.counts
    assert counts[RecipientStatus.RELEASED] == 0
    assert counts[RecipientStatus.DELIVERED] == len(mails) == ledger["delivered"]
    assert counts[RecipientStatus.PENDING] == RECIPIENTS - len(mails)
    # Every send waiting at the pause came back, but those delivered meanwhile.
    delivered_since = len(mails) - before.book.counts[RecipientStatus.DELIVERED]
    assert ledger["returned"] >= before.book.outstanding - delivered_since >= BACKLOG - POOL - 100
    assert set(ledger) <= {"delivered", "returned"}, ledger
    events = await stack.events_of(message)
    returned = [c for e in events if e.type == "RecipientsReturned" for c in e.contact_ids]  # type: ignore[attr-defined]
    assert len(returned) == len(set(returned)) == ledger["returned"]
    view = view_states(events, message)
    assert view == Counter({"delivered": len(mails), "pending": RECIPIENTS - len(mails)})
    # Nothing more arrives: every send was settled above, none is claimed; read the sink again
    # after the views were checked.
    assert len(await stack.sink()) == len(mails)
    delivered_at_pause = len(mails)

    await slow(stack, 0)
    await stack.decide(record(ResumeMessage(command_id=ids(), message_id=message)))
    # The whole audience again at the machine's rate: long on a busy machine, so the cheap
    # ledger count first, then the message's status.
    await stack.wait_delivered(message, RECIPIENTS, within=900)
    sent = await stack.wait_status(message, MessageStatus.SENT, within=300)

    mails = await stack.sink()
    at_sink = Counter(rcpt for _, rcpt in mails)
    assert at_sink == Counter(c.email for c in audience("p")), "a contact missing or mailed twice"
    assert max(Counter(mid for mid, _ in mails).values()) == 1
    assert sent.book.counts[RecipientStatus.DELIVERED] == RECIPIENTS
    out = released(await stack.events_of(message))
    again = Counter(out)
    assert {c for c, n in again.items() if n == 2} == set(returned)
    assert max(again.values()) == 2
    # Re-released in their original order: the order of their first release.
    first_order = list(dict.fromkeys(out))
    after_resume = out[len(out) - (RECIPIENTS - delivered_at_pause) :]
    was_returned = set(returned)
    assert [c for c in after_resume if c in was_returned] == [
        c for c in first_order if c in was_returned
    ]
    assert view_states(await stack.events_of(message), message) == Counter(
        {"delivered": RECIPIENTS}
    )
    assert await ledger_states(stack, message) == Counter({"delivered": RECIPIENTS})


async def test_a_cancel_stops_mail_at_the_sink_at_once_and_the_backlog_ends_not_sent(
    stack: DeliveryStack,
) -> None:
    """Given the same backlog of more than 20,000 released sends, when the message is canceled,
    then at most the pool's 8 in-flight mails reach the sink after the cancel was accepted and
    none afterwards; every waiting send ends returned in the ledger and pending in the message,
    which the recipients view shows as not sent (a canceled message's pending recipients)."""
    stack.spawn_dispatcher()
    stack.spawn_delivery(SMTP_POOL_SIZE=str(POOL))
    message = ids()
    before = await with_backlog(stack, message, "q")

    await stack.decide(record(CancelMessage(command_id=ids(), message_id=message)))
    accepted = datetime.now(UTC)

    canceled = await settled(stack, message)
    late = await arrived_after(stack, accepted)
    assert len(late) <= POOL, f"{len(late)} mails reached the sink after the cancel"
    mails = await stack.sink()
    ledger = await ledger_states(stack, message)
    assert canceled.status is MessageStatus.CANCELED
    assert canceled.book.counts[RecipientStatus.DELIVERED] == len(mails) == ledger["delivered"]
    assert canceled.book.counts[RecipientStatus.PENDING] == RECIPIENTS - len(mails)
    delivered_since = len(mails) - before.book.counts[RecipientStatus.DELIVERED]
    assert ledger["returned"] >= before.book.outstanding - delivered_since
    assert set(ledger) <= {"delivered", "returned"}, ledger
    events = await stack.events_of(message)
    tables = project(events)
    assert tables.messages[message]["status"] == "canceled"
    assert tables.messages[message]["released"] == 0
    assert view_states(events, message) == Counter(
        {"delivered": len(mails), "pending": RECIPIENTS - len(mails)}
    )
    await slow(stack, 0)
    assert len(await stack.sink()) == len(mails)


async def test_sigkill_of_the_worker_right_after_the_fence_and_of_the_dispatcher_sends_once(
    stack: DeliveryStack,
) -> None:
    """Given the backlog and a pause, when the delivery worker is SIGKILLed as soon as it has
    returned its first sends (right after the fence), and the dispatcher too, both restarted,
    and then the message is resumed (and the worker killed once more while it re-sends), then
    the message is sent and no contact has two mails: every contact is delivered (one mail) or
    unknown (claimed by a killed worker: at most two claim chunks per partition per kill)."""
    dispatcher = stack.spawn_dispatcher()
    worker = stack.spawn_delivery(SMTP_POOL_SIZE=str(POOL))
    message = ids()
    await with_backlog(stack, message, "k")
    await stack.decide(record(PauseMessage(command_id=ids(), message_id=message)))

    async def first_returns() -> bool:
        return (await ledger_states(stack, message))["returned"] > 0

    await stack.wait_for("the first returned sends", first_returns, within=60)
    stack.kill(worker)
    stack.kill(dispatcher)
    dispatcher = stack.spawn_dispatcher()
    worker = stack.spawn_delivery(SMTP_POOL_SIZE=str(POOL))
    paused = await settled(stack, message)
    assert paused.book.counts[RecipientStatus.RELEASED] == 0

    await slow(stack, 0)
    await stack.decide(record(ResumeMessage(command_id=ids(), message_id=message)))
    delivered_then = paused.book.counts[RecipientStatus.DELIVERED]
    await stack.wait_delivered(message, delivered_then + 2000, within=180)
    stack.kill(worker)
    worker = stack.spawn_delivery(SMTP_POOL_SIZE=str(POOL))
    most_unknown = 2 * CLAIM_CHUNK * stack.settings.kafka_partitions
    await stack.wait_delivered(message, RECIPIENTS - most_unknown, within=900)
    state = await stack.wait_status(message, MessageStatus.SENT, within=300)

    mails = await stack.sink()
    at_sink = Counter(rcpt.split("@")[0] for _, rcpt in mails)
    assert max(at_sink.values()) == 1, "a contact got two copies"
    assert max(Counter(mid for mid, _ in mails).values()) == 1
    ledger = await stack.ledger(message)
    assert set(Counter(row["state"] for row in ledger.values())) <= {"delivered", "unknown"}
    delivered = {c for c, row in ledger.items() if row["state"] == "delivered"}
    unknown = {c for c, row in ledger.items() if row["state"] == "unknown"}
    assert delivered <= set(at_sink) <= delivered | unknown
    assert delivered | unknown == {c.contact_id for c in audience("k")}, "a contact was lost"
    assert len(unknown) <= most_unknown
    assert state.book.counts[RecipientStatus.DELIVERED] == len(delivered)
    assert state.book.counts[RecipientStatus.UNKNOWN] == len(unknown)
