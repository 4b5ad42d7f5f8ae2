"""The read side's product rules (core/views.py): what each list shows, the remaining count, the
reason of a pending contact of a canceled message, the audience count, the next batch time."""

from __future__ import annotations

from core import ACTIVE_STATUSES, MessageStatus
from core.views import LISTS, not_sent_reason, remaining_count


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
