"""Add recipients: audiences arrive in chunks, in draft, scheduled, sending and paused messages."""

from datetime import timedelta

import pytest

from core import CommandNotAllowedError, MessageStatus, RecipientStatus
from schemas import (
    MAX_CHUNK,
    AddRecipients,
    AudienceReport,
    CancelMessage,
    DeliveryPlan,
    DraftCreated,
    PauseMessage,
    RecipientsAdded,
    ResumeMessage,
    ScheduleMessage,
)

from .dsl import CONTENT, T0, Sim, cmd, contact, contacts, ev, given, raises_validation

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())


def test_added_contacts_are_pending_in_a_draft() -> None:
    outcome = given(created).when(cmd(AddRecipients, contacts=contacts("a", "b")))
    outcome.then(
        ev(RecipientsAdded, contacts=contacts("a", "b"), report=AudienceReport(added=("a", "b")))
    )
    book = outcome.state().book
    assert [book.status_of(c) for c in "ab"] == [RecipientStatus.PENDING] * 2
    assert book.pending == 2


def test_adding_contacts_already_in_the_audience_is_a_no_op() -> None:
    history = given(created, ev(RecipientsAdded, contacts=contacts("a", "b")))
    history.when(cmd(AddRecipients, contacts=contacts("b", "a"))).then_nothing()


def test_only_new_contacts_of_a_chunk_are_recorded_once_each() -> None:
    history = given(created, ev(RecipientsAdded, contacts=contacts("a")))
    history.when(cmd(AddRecipients, contacts=contacts("a", "b", "b", "c"))).then(
        ev(
            RecipientsAdded,
            contacts=contacts("b", "c"),
            report=AudienceReport(
                added=("b", "c"), already_present=("a",), duplicate_in_chunk=("b",)
            ),
        )
    )


def test_contacts_added_while_sending_are_released_as_soon_as_due() -> None:
    sim = Sim(audience=contacts("a"))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    sim.do(cmd(AddRecipients, contacts=contacts("late")), now=T0 + timedelta(milliseconds=500))
    sim.tick(T0 + timedelta(seconds=1))
    assert sim.released == ["a", "late"]


def test_contacts_added_while_paused_are_included_when_the_message_resumes() -> None:
    sim = Sim(audience=contacts("a"))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    sim.do(cmd(PauseMessage))
    sim.do(cmd(AddRecipients, contacts=contacts("while-paused")))
    sim.run(until=T0 + timedelta(seconds=30))
    assert sim.released == ["a"]
    sim.do(cmd(ResumeMessage))
    sim.run(until=T0 + timedelta(seconds=32))
    assert sim.released == ["a", "while-paused"]
    assert sim.status is MessageStatus.SENT


def test_a_finished_message_takes_no_more_recipients() -> None:
    sim = Sim(audience=contacts("a"))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.do(cmd(CancelMessage))
    with pytest.raises(CommandNotAllowedError, match="canceled"):
        sim.do(cmd(AddRecipients, contacts=contacts("b")))


def test_a_chunk_holds_at_most_the_documented_maximum() -> None:
    raises_validation(
        cmd, AddRecipients, contacts=tuple(contact(f"c{i}") for i in range(MAX_CHUNK + 1))
    )


@pytest.mark.parametrize("email", ["no-at-sign", "a@b", "two@@example.org", "sp ace@example.org"])
def test_contacts_need_a_plausible_address(email: str) -> None:
    raises_validation(contact, "a", email=email)


def test_contacts_need_a_known_iana_zone() -> None:
    raises_validation(contact, "a", zone="Mars/Olympus_Mons")
