"""Add and remove recipients: the chunk's answer says what happened to every contact it named.

Issue 11: a re-added contact id with another address, or an id repeated inside one chunk with
other data, was silently ignored. Now each id lands in one list of the report (core.audience),
the report is on the event (a replay answers the same), a pending contact's new data is applied,
a released one's change is refused with the reason.
"""

from datetime import timedelta

from core import RecipientStatus, fold
from core.audience import chunk_report
from core.book import address_key, fingerprint
from schemas import (
    AddRecipients,
    AudienceReport,
    DeliveryPlan,
    DraftCreated,
    RecipientsAdded,
    RecipientsReleased,
    RefusedContact,
    RemoveRecipients,
    ScheduleMessage,
)

from .dsl import CONTENT, T0, Sim, cmd, contact, contacts, ev, given

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())
a_and_b = ev(RecipientsAdded, contacts=contacts("a", "b"))


def _report(outcome: object) -> AudienceReport:
    [event] = outcome.events  # type: ignore[attr-defined]
    assert isinstance(event, RecipientsAdded) and event.report is not None
    return event.report


def test_a_pending_contact_re_added_with_another_address_is_updated() -> None:
    outcome = given(created, a_and_b).when(
        cmd(AddRecipients, contacts=(contact("a", email="new-a@example.org"),))
    )
    assert _report(outcome) == AudienceReport(updated=("a",))
    book = outcome.state().book
    assert book.fingerprint_of("a") == fingerprint(contact("a", email="new-a@example.org"))
    assert book.address_key_of(book.slots["a"]) == address_key("new-a@example.org")
    assert book.holders_of("a@example.org") == []
    assert book.holders_of("new-a@example.org") == ["a"]
    assert book.pending == 2 and len(book) == 2


def test_an_update_moving_a_pending_contact_to_another_zone_moves_its_queue() -> None:
    outcome = given(created, a_and_b).when(
        cmd(AddRecipients, contacts=(contact("a", zone="Asia/Tokyo"),))
    )
    book = outcome.state().book
    assert list(book.queues[""].live()) == ["b"]
    assert list(book.queues["Asia/Tokyo"].live()) == ["a"]
    assert book.pending == 2 and book.queues[""].pending == 1


def test_the_updated_address_is_the_one_the_mail_goes_to() -> None:
    sim = Sim(audience=contacts("a"))
    sim.do(cmd(AddRecipients, contacts=(contact("a", email="moved@example.org"),)))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    assert sim.released == ["a"]
    assert sim.contact("a").email == "moved@example.org"


def test_a_released_contact_re_added_with_other_data_is_refused_with_the_reason() -> None:
    history = given(created, a_and_b, ev(RecipientsReleased, contact_ids=("a",)))
    outcome = history.when(
        cmd(AddRecipients, contacts=(contact("a", email="x@example.org"), contact("c")))
    )
    report = _report(outcome)
    assert report.added == ("c",)
    assert report.refused == (
        RefusedContact(
            contact_id="a", reason="the contact is released: its data can no longer change"
        ),
    )
    assert outcome.state().book.fingerprint_of("a") == fingerprint(contact("a"))


def test_only_a_refusal_is_a_no_op_whose_answer_still_names_it() -> None:
    history = given(created, a_and_b, ev(RecipientsReleased, contact_ids=("a",)))
    command = cmd(AddRecipients, contacts=(contact("a", email="x@example.org"),))
    history.when(command).then_nothing()
    state = history.state()
    assert state is not None
    report = chunk_report(command, [], state.book)
    assert report is not None and [r.contact_id for r in report.refused] == ["a"]


def test_an_id_repeated_in_one_chunk_with_other_data_is_reported_and_the_first_counts() -> None:
    outcome = given(created).when(
        cmd(
            AddRecipients,
            contacts=(contact("a"), contact("a", email="other@example.org"), contact("b")),
        )
    )
    assert _report(outcome) == AudienceReport(added=("a", "b"), duplicate_in_chunk=("a",))
    assert outcome.state().book.fingerprint_of("a") == fingerprint(contact("a"))


def test_a_new_id_with_an_address_already_held_is_reported_as_duplicate_address() -> None:
    outcome = given(created, a_and_b).when(
        cmd(
            AddRecipients,
            contacts=(
                contact("c", email="A@Example.org"),
                contact("d"),
                contact("e", email="d@example.org"),
            ),
        )
    )
    assert _report(outcome) == AudienceReport(added=("d",), duplicate_address=("c", "e"))
    # They join (the planner sends one copy per address), so the audience says who they are.
    assert outcome.state().book.status_of("c") is RecipientStatus.PENDING


def test_a_chunk_of_contacts_already_present_answers_already_present() -> None:
    history = given(created, a_and_b)
    command = cmd(AddRecipients, contacts=contacts("a", "b"))
    history.when(command).then_nothing()
    state = history.state()
    assert state is not None
    assert chunk_report(command, [], state.book) == AudienceReport(already_present=("a", "b"))


def test_a_replay_answers_as_the_live_command_did() -> None:
    history = given(created, a_and_b)
    command = cmd(
        AddRecipients, contacts=(contact("a", email="n@example.org"), contact("b"), contact("c"))
    )
    outcome = history.when(command)
    live = chunk_report(command, outcome.events, outcome.state().book)
    replayed = fold([*history.events, *outcome.events])
    assert replayed is not None
    assert chunk_report(command, outcome.events, replayed.book) == live
    assert live == AudienceReport(added=("c",), updated=("a",), already_present=("b",))


def test_removing_reports_removed_not_present_and_refused() -> None:
    history = given(created, a_and_b, ev(RecipientsReleased, contact_ids=("b",)))
    command = cmd(RemoveRecipients, contact_ids=("a", "b", "zz", "a"))
    outcome = history.when(command)
    report = chunk_report(command, outcome.events, outcome.state().book)
    assert report == AudienceReport(
        removed=("a",),
        not_present=("zz",),
        duplicate_in_chunk=("a",),
        refused=(
            RefusedContact(
                contact_id="b", reason="the contact is released: only pending contacts are removed"
            ),
        ),
    )


def test_an_updated_contact_in_the_timezone_mode_is_due_in_its_new_zone() -> None:
    plan = DeliveryPlan(mode="recipient_timezone")
    sim = Sim(delivery=plan, audience=contacts("a", zone="Europe/London"))
    sim.do(cmd(AddRecipients, contacts=(contact("a", zone="Asia/Tokyo"),)))
    sim.do(cmd(ScheduleMessage, send_at_local=T0.replace(tzinfo=None) + timedelta(hours=12)))
    book = sim.s.book
    assert book.queues["Europe/London"].pending == 0
    assert book.queues["Asia/Tokyo"].pending == 1
