"""Cancel: final; nothing is released after it (from scheduled, sending or paused)."""

from datetime import timedelta

import pytest

from core import CommandNotAllowedError, MessageStatus, RecipientStatus
from schemas import (
    CancelMessage,
    DeliveryPlan,
    DraftCreated,
    MessageCanceled,
    MessagePaused,
    MessageScheduled,
    MessageSent,
    ScheduleMessage,
    SendingStarted,
)

from .dsl import CONTENT, T0, ZONE, Sim, cmd, contact, ev, given

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())
scheduled = ev(MessageScheduled, send_at=T0, default_time_zone=ZONE)
started = ev(SendingStarted)


@pytest.mark.parametrize(
    "history",
    [
        (created, scheduled),
        (created, scheduled, started),
        (created, scheduled, started, ev(MessagePaused)),
    ],
    ids=["scheduled", "sending", "paused"],
)
def test_cancel_is_allowed_from_scheduled_sending_and_paused(history: tuple[object, ...]) -> None:
    outcome = given(*history).when(cmd(CancelMessage, reason="duplicate campaign"))  # type: ignore[arg-type]
    outcome.then(ev(MessageCanceled, reason="duplicate campaign"))
    assert outcome.state().status is MessageStatus.CANCELED


def test_cancel_stops_everything_nothing_is_released_after_it() -> None:
    sim = Sim(DeliveryPlan(release_rate=5), [contact(f"c{i}") for i in range(20)])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    sim.do(cmd(CancelMessage))
    sim.run(until=T0 + timedelta(minutes=1))
    assert len(sim.released) == 5
    assert sim.status is MessageStatus.CANCELED


def test_sends_in_flight_at_cancel_still_get_their_outcome() -> None:
    sim = Sim(DeliveryPlan(release_rate=5), [contact(f"c{i}") for i in range(20)])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    sim.do(cmd(CancelMessage))
    sim.deliver()
    assert sim.s.book.counts[RecipientStatus.DELIVERED] == 5
    assert sim.status is MessageStatus.CANCELED


def test_canceling_a_canceled_message_is_a_no_op() -> None:
    given(created, scheduled, ev(MessageCanceled)).when(cmd(CancelMessage)).then_nothing()


def test_a_draft_cannot_be_canceled() -> None:
    given(created).when(cmd(CancelMessage)).then_raises(CommandNotAllowedError)


def test_a_sent_message_cannot_be_canceled() -> None:
    sent = ev(MessageSent, delivered=0, failed=0, skipped=0, unknown=0)
    error = (
        given(created, scheduled, started, sent)
        .when(cmd(CancelMessage))
        .then_raises(CommandNotAllowedError)
    )
    assert "sent" in str(error) and "CopyMessage" in str(error)
