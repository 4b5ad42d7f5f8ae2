"""Completion: sent when every due recipient has a final outcome and no zone or batch is left."""

from datetime import UTC, datetime, timedelta

from core import MessageStatus
from schemas import (
    DeliveryPlan,
    FailedRecipient,
    MessageSent,
    PauseMessage,
    RecordDeliveryOutcomes,
    ScheduleMessage,
)

from .dsl import DELIVERY, T0, Sim, cmd, contact


def test_not_sent_while_a_released_recipient_awaits_its_outcome() -> None:
    sim = Sim(audience=[contact("a"), contact("b")])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.run(until=T0 + timedelta(seconds=5), deliver=False)
    assert sim.status is MessageStatus.SENDING
    sim.do(
        cmd(
            RecordDeliveryOutcomes,
            delivered=("a",),
            failed=(FailedRecipient(contact_id="b", reason="bounce"),),
        ),
        actor=DELIVERY,
    )
    events = sim.tick(T0 + timedelta(seconds=6))
    assert [e.type for e in events] == ["MessageSent"]
    sent = events[0]
    assert isinstance(sent, MessageSent) and (sent.delivered, sent.failed) == (1, 1)


def test_an_unknown_outcome_is_final_for_completion() -> None:
    sim = Sim(audience=[contact("a")])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    sim.do(cmd(RecordDeliveryOutcomes, unknown=("a",)), actor=DELIVERY)
    sim.tick(T0 + timedelta(seconds=1))
    assert sim.status is MessageStatus.SENT


def test_not_sent_while_a_zone_is_still_to_come() -> None:
    sim = Sim(
        DeliveryPlan(mode="recipient_timezone"),
        [contact("tokyo", "Asia/Tokyo"), contact("ny", "America/New_York")],
        now=datetime(2030, 1, 14, 12, 0, tzinfo=UTC),
    )
    sim.do(cmd(ScheduleMessage, send_at_local=datetime(2030, 1, 15, 9, 0)))
    sim.run(until=datetime(2030, 1, 15, 13, 0, tzinfo=UTC), step=timedelta(hours=1))
    assert sim.released == ["tokyo"]
    assert sim.status is MessageStatus.SENDING


def test_an_empty_audience_is_sent_as_soon_as_it_starts() -> None:
    sim = Sim()
    sim.do(cmd(ScheduleMessage, send_at=T0))
    assert [e.type for e in sim.tick(T0)] == ["SendingStarted", "MessageSent"]


def test_a_paused_message_is_not_completed() -> None:
    sim = Sim(audience=[contact("a")])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    sim.do(cmd(PauseMessage))
    sim.deliver()
    sim.tick(T0 + timedelta(seconds=1))
    assert sim.status is MessageStatus.PAUSED


def test_nothing_happens_to_a_sent_message() -> None:
    sim = Sim(audience=[contact("a")])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.run(until=T0 + timedelta(seconds=2))
    assert sim.status is MessageStatus.SENT
    assert sim.tick(T0 + timedelta(days=1)) == []
