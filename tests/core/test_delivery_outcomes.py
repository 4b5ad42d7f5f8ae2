"""Delivery outcomes: every released recipient ends delivered, failed (with reason) or unknown."""

from datetime import timedelta

from core import RecipientStatus
from schemas import (
    DeliveryPlan,
    FailedRecipient,
    RecipientsDelivered,
    RecipientsFailed,
    RecipientsOutcomeUnknown,
    RecordDeliveryOutcomes,
    ScheduleMessage,
)

from .dsl import DELIVERY, T0, Sim, cmd, contacts

bounce = FailedRecipient(contact_id="b", reason="550 5.1.1 mailbox unknown")


def released_three() -> Sim:
    sim = Sim(DeliveryPlan(), contacts("a", "b", "c", "d"))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    return sim


def test_outcomes_of_released_recipients_are_recorded() -> None:
    sim = released_three()
    events = sim.do(
        cmd(RecordDeliveryOutcomes, delivered=("a",), failed=(bounce,), unknown=("c",)),
        actor=DELIVERY,
    )
    assert [type(e) for e in events] == [
        RecipientsDelivered,
        RecipientsFailed,
        RecipientsOutcomeUnknown,
    ]
    book = sim.s.book
    assert book.status_of("a") is RecipientStatus.DELIVERED
    assert book.status_of("b") is RecipientStatus.FAILED
    assert book.reason_of("b") == "550 5.1.1 mailbox unknown"
    assert book.status_of("c") is RecipientStatus.UNKNOWN


def test_the_first_outcome_stands() -> None:
    sim = released_three()
    sim.do(cmd(RecordDeliveryOutcomes, unknown=("a",)), actor=DELIVERY)
    assert sim.do(cmd(RecordDeliveryOutcomes, delivered=("a",)), actor=DELIVERY) == []
    assert sim.s.book.status_of("a") is RecipientStatus.UNKNOWN


def test_an_unknown_outcome_is_never_retried() -> None:
    sim = released_three()
    sim.do(cmd(RecordDeliveryOutcomes, unknown=("a", "b", "c", "d")), actor=DELIVERY)
    sim.run(until=T0 + timedelta(seconds=5), deliver=False)
    assert sim.released.count("a") == 1
    assert sim.s.book.status_of("a") is RecipientStatus.UNKNOWN


def test_outcomes_for_contacts_never_released_are_ignored() -> None:
    sim = Sim(DeliveryPlan(), contacts("a"))
    assert sim.do(cmd(RecordDeliveryOutcomes, delivered=("a", "ghost")), actor=DELIVERY) == []
    assert sim.s.book.status_of("a") is RecipientStatus.PENDING
