"""The read side's product rules (core/views.py): what each list shows, the remaining count, the
reason of a pending contact of a canceled message, the audience count, the next batch time, who
did not get a message, the statuses a test send is offered in."""

from __future__ import annotations

from core import ACTIVE_STATUSES, TESTABLE_STATUSES, MessageStatus
from core.views import (
    LIST_OF,
    LISTS,
    NEVER_RECEIVED,
    NOT_DELIVERED,
    not_sent_reason,
    remaining_count,
)


def test_each_list_shows_its_statuses() -> None:
    assert LISTS == {
        "sent": ("sending", "paused", "canceled", "sent"),
        "scheduled": ("scheduled",),
        "drafts": ("draft",),
    }


def test_the_active_statuses_are_defined_once() -> None:
    import importlib

    decide_module = importlib.import_module("core.decide")
    from services.dispatcher import decider

    assert frozenset({"scheduled", "sending", "paused"}) == ACTIVE_STATUSES
    assert decider.ACTIVE is ACTIVE_STATUSES
    assert decide_module._CANCELABLE is ACTIVE_STATUSES


def test_remaining_is_pending_and_in_flight_and_only_in_flight_once_canceled() -> None:
    assert remaining_count(MessageStatus.SENDING.value, pending=5, released=2) == 7
    assert remaining_count(MessageStatus.PAUSED.value, pending=5, released=0) == 5
    assert remaining_count(MessageStatus.CANCELED.value, pending=5, released=2) == 2


def test_a_pending_contact_of_a_canceled_message_shows_canceled() -> None:
    assert not_sent_reason("pending", None, "canceled") == "canceled"
    assert not_sent_reason("pending", None, "paused") is None
    assert not_sent_reason("failed", "550 no such user", "canceled") == "550 no such user"


def test_every_status_but_discarded_is_shown_by_exactly_the_list_that_lists_it() -> None:
    assert LIST_OF == {
        "draft": "drafts",
        "scheduled": "scheduled",
        "sending": "sent",
        "paused": "sent",
        "canceled": "sent",
        "sent": "sent",
    }
    assert set(LIST_OF) == {s.value for s in MessageStatus} - {"discarded"}


def test_who_did_not_get_it_is_everyone_but_the_delivered() -> None:
    assert (
        frozenset({"pending", "released", "failed", "skipped", "removed", "excluded", "unknown"})
        == NOT_DELIVERED
    )


def test_who_surely_never_got_it_leaves_out_who_may_have_and_who_was_never_meant_to() -> None:
    # Released and unknown may have received it: a second copy is worse than a missing one.
    assert NEVER_RECEIVED == ("pending", "failed", "skipped")


def test_a_test_send_is_offered_where_the_core_accepts_it() -> None:
    import importlib

    decide_module = importlib.import_module("core.decide")

    assert frozenset({"draft", "scheduled"}) == TESTABLE_STATUSES
    assert decide_module._TESTABLE is TESTABLE_STATUSES
