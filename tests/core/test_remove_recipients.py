"""Remove recipients: pending contacts leave; removing an already-sent contact changes nothing."""

from datetime import timedelta

from core import RecipientStatus
from schemas import (
    AddRecipients,
    DeliveryPlan,
    DraftCreated,
    RecipientsAdded,
    RecipientsRemoved,
    RemoveRecipients,
    ScheduleMessage,
)

from .dsl import CONTENT, T0, Sim, cmd, contact, contacts, ev, given

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())


def test_removed_pending_contacts_leave_the_audience() -> None:
    outcome = given(created, ev(RecipientsAdded, contacts=contacts("a", "b"))).when(
        cmd(RemoveRecipients, contact_ids=("a", "zzz"))
    )
    outcome.then(ev(RecipientsRemoved, contact_ids=("a",)))
    book = outcome.state().book
    assert book.status_of("a") is RecipientStatus.REMOVED
    assert book.pending == 1


def test_a_removed_contact_is_never_released() -> None:
    sim = Sim(audience=contacts("a", "b", "c"))
    sim.do(cmd(RemoveRecipients, contact_ids=("b",)))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.run(until=T0 + timedelta(seconds=2))
    assert sim.released == ["a", "c"]


def test_removing_an_already_released_contact_changes_nothing() -> None:
    sim = Sim(audience=contacts("a"))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    assert sim.do(cmd(RemoveRecipients, contact_ids=("a",))) == []
    assert sim.s.book.status_of("a") is RecipientStatus.RELEASED


def test_a_contact_removed_and_added_again_is_pending_once_and_released_once() -> None:
    sim = Sim(audience=contacts("a", "b"))
    sim.do(cmd(RemoveRecipients, contact_ids=("a",)))
    sim.do(cmd(AddRecipients, contacts=(contact("a", zone="Asia/Tokyo"),)))
    assert sim.s.book.pending == 2
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.run(until=T0 + timedelta(seconds=3))
    assert sorted(sim.released) == ["a", "b"]


def test_removing_contacts_not_pending_is_a_no_op() -> None:
    given(created).when(cmd(RemoveRecipients, contact_ids=("ghost",))).then_nothing()
