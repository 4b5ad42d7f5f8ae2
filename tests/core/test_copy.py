"""Copy as draft: any message; same content, plan and audience; optionally excluding everyone
who already received the original."""

from datetime import timedelta

import pytest

from core import InvalidCommandError, MessageState, MessageStatus, RecipientStatus, decide, evolve
from core.contacts import copy_context
from schemas import (
    AddRecipients,
    CancelMessage,
    CopyMessage,
    DeliveryPlan,
    DraftCreated,
    Event,
    FailedRecipient,
    MessageCopied,
    RecipientsAdded,
    RecipientsExcluded,
    RecordDeliveryOutcomes,
    RemoveRecipients,
    ScheduleMessage,
)

from .dsl import COPY, MESSAGE, T0, Sim, cmd, contact, contacts, ctx, fold_all


def sent_to_some() -> Sim:
    """a, b released and delivered/failed/unknown; c, d pending; e removed."""
    sim = Sim(DeliveryPlan(release_rate=3), contacts("a", "b", "c", "d", "e"))
    sim.do(cmd(RemoveRecipients, contact_ids=("e",)))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)  # releases a, b, c
    sim.do(
        cmd(
            RecordDeliveryOutcomes,
            delivered=("a",),
            failed=(FailedRecipient(contact_id="b", reason="550 no such user"),),
            unknown=("c",),
        )
    )
    return sim


def copy_of(sim: Sim, exclude: bool) -> tuple[list[Event], MessageState]:
    """Decide the copy on the original's state; fold the copy's own stream."""
    out = decide(
        cmd(CopyMessage, new_message_id=COPY, exclude_delivered=exclude),
        sim.s,
        copy_context(ctx(), sim.s, sim.contacts),
    )
    original = [e for e in out if e.message_id == MESSAGE]
    copy_state = fold_all(e for e in out if e.message_id == COPY)
    assert copy_state is not None
    return original, copy_state


def test_a_copy_is_a_new_draft_with_the_same_content_plan_and_audience() -> None:
    sim = sent_to_some()
    original, copy = copy_of(sim, exclude=False)
    assert [e.type for e in original] == ["MessageCopied"]
    assert copy.status is MessageStatus.DRAFT
    assert copy.content == sim.s.content and copy.plan == sim.s.plan
    assert copy.copied_from == MESSAGE
    book = copy.book
    assert {cid: book.status_of(cid) for cid in "abcd"} == dict.fromkeys(
        "abcd", RecipientStatus.PENDING
    )
    assert book.status_of("e") is None


def test_copy_excluding_delivered_excludes_everyone_who_may_have_received_it() -> None:
    sim = sent_to_some()
    _, copy = copy_of(sim, exclude=True)
    book = copy.book
    assert book.status_of("a") is RecipientStatus.EXCLUDED  # delivered
    assert book.status_of("c") is RecipientStatus.EXCLUDED  # unknown: maybe received
    assert book.status_of("b") is RecipientStatus.PENDING  # failed for good: never received
    assert book.status_of("d") is RecipientStatus.PENDING  # never released


def test_the_exclusion_holds_for_contacts_added_later_by_id_or_by_address() -> None:
    sim = sent_to_some()
    out = decide(
        cmd(CopyMessage, new_message_id=COPY, exclude_delivered=True),
        sim.s,
        copy_context(ctx(), sim.s, sim.contacts),
    )
    copy = fold_all(e for e in out if e.message_id == COPY)
    assert copy is not None
    add = cmd(
        AddRecipients,
        message_id=COPY,
        contacts=(contact("a2", email="A@Example.org "), contact("z")),
    )
    for event in decide(add, copy, ctx()):
        copy = evolve(copy, event)
    assert copy.book.status_of("a2") is RecipientStatus.EXCLUDED
    assert copy.book.status_of("z") is RecipientStatus.PENDING


def test_the_copy_stream_stands_alone_and_names_its_origin() -> None:
    sim = sent_to_some()
    out = decide(
        cmd(CopyMessage, new_message_id=COPY, exclude_delivered=True),
        sim.s,
        copy_context(ctx(), sim.s, sim.contacts),
    )
    copy_events = [e for e in out if e.message_id == COPY]
    assert [e.sequence for e in copy_events] == list(range(1, len(copy_events) + 1))
    assert isinstance(copy_events[0], DraftCreated) and copy_events[0].copied_from == MESSAGE
    assert any(isinstance(e, RecipientsExcluded) for e in copy_events)
    assert isinstance(copy_events[-1], RecipientsAdded)
    copied = [e for e in out if isinstance(e, MessageCopied)]
    assert copied[0].sequence == sim.s.version + 1 and copied[0].copy_id == COPY


@pytest.mark.parametrize("final", ["sent", "canceled"])
def test_any_message_can_be_copied(final: str) -> None:
    sim = Sim(audience=contacts("a"))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    if final == "canceled":
        sim.do(cmd(CancelMessage))
    else:
        sim.run(until=T0 + timedelta(seconds=2))
    assert sim.status == final
    out = sim.do(cmd(CopyMessage, new_message_id=COPY))
    assert [e.type for e in out] == ["MessageCopied"]


def test_a_copy_needs_a_new_id() -> None:
    sim = Sim()
    with pytest.raises(InvalidCommandError):
        sim.do(cmd(CopyMessage, new_message_id=MESSAGE))


def test_the_same_copy_command_twice_is_a_no_op() -> None:
    sim = Sim(audience=contacts("a"))
    copy = cmd(CopyMessage, new_message_id=COPY)
    assert sim.do(copy)
    assert sim.do(copy) == []


def test_a_large_audience_is_copied_in_chunks() -> None:
    sim = Sim(audience=[contact(f"c{i}") for i in range(10_000)])
    sim.do(cmd(AddRecipients, contacts=tuple(contact(f"d{i}") for i in range(5))))
    out = decide(
        cmd(CopyMessage, new_message_id=COPY), sim.s, copy_context(ctx(), sim.s, sim.contacts)
    )
    sizes = [len(e.contacts) for e in out if isinstance(e, RecipientsAdded)]
    assert sizes == [10_000, 5]
