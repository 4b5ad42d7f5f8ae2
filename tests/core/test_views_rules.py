"""The read side's product rules (core/views.py): what each list shows, the remaining count, the
reason of a pending contact of a canceled message, the audience count, the next batch time, who
did not get a message, the statuses a test send is offered in."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from bench.harness.histories import Simulator, contacts
from core import ACTIVE_STATUSES, TESTABLE_STATUSES, MessageStatus
from core.views import (
    LIST_OF,
    LISTS,
    NEVER_RECEIVED,
    NOT_DELIVERED,
    ZoneTime,
    first_release_at,
    not_sent_reason,
    remaining_count,
    zone_times,
    zones_to_skip,
)
from schemas import CancelMessage, DeliveryPlan, PauseMessage, ScheduleMessage
from tests.projections.tables import project


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


def test_remaining_is_pending_and_in_flight_in_every_status() -> None:
    assert remaining_count(MessageStatus.SENDING.value, pending=5, released=2) == 7
    assert remaining_count(MessageStatus.PAUSED.value, pending=5, released=0) == 5
    # Canceled: the pending ones are listed "not sent: canceled", the in-flight ones are not
    # sent yet; remaining counts exactly those (issue 11).
    assert remaining_count(MessageStatus.CANCELED.value, pending=5, released=2) == 7


def test_a_canceled_messages_remaining_equals_its_recipients_not_sent() -> None:
    sim = Simulator()
    message = sim.create(plan=DeliveryPlan(release_rate=1))
    sim.add(message, contacts(4))
    sim.send_now(message)
    sim.tick()  # starts and releases one
    sim.tick()  # and one more
    sim.deliver(message, delivered=("c0",))
    sim.run(CancelMessage(command_id=sim.new_id(), message_id=message))
    tables = project(sim.events)
    row = tables.messages[message]

    mine = [r for (m, _), r in tables.recipients.items() if m == message]
    not_sent = [
        r
        for r in mine
        if r["state"] == "released"
        or not_sent_reason(r["state"], r["reason"], row["status"]) == "canceled"
    ]
    assert remaining_count(row["status"], row["pending"], row["released"]) == len(not_sent) == 3


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


def test_a_send_waiting_for_its_retry_shows_the_last_refusal() -> None:
    refusal = "451 4.7.1 greylisted, try again later"
    assert not_sent_reason("released", None, "sending", refusal) == f"retrying after: {refusal}"
    # Without a deferral (in flight, first attempt) there is nothing to say.
    assert not_sent_reason("released", None, "sending", None) is None
    # An outcome replaces it: the ledger's refusal is only read for released recipients.
    assert not_sent_reason("delivered", None, "sending", refusal) is None


def zoned(local_hour: int = 9) -> tuple[Simulator, UUID]:
    """A recipient_timezone message for Tokyo (UTC+9), Berlin (UTC+1) and New York (UTC-5),
    scheduled at 09:00 local on 16 January 2030, in an account whose zone is Europe/Berlin."""
    sim = Simulator(zone="Europe/Berlin")
    message = sim.create(plan=DeliveryPlan(mode="recipient_timezone", missed_zone_policy="skip"))
    sim.add(message, contacts(5, zones=("Asia/Tokyo", "America/New_York", None)))
    local = datetime(2030, 1, 16, local_hour, 0)
    sim.run(ScheduleMessage(command_id=sim.new_id(), message_id=message, send_at_local=local))
    return sim, message


def test_recipient_timezone_views_show_each_zones_due_time_and_the_first_release() -> None:
    sim, message = zoned()
    state = sim.states[message]

    assert state.schedule is not None
    # The send time in the account's zone: 09:00 Berlin = 08:00 UTC.
    assert state.schedule.send_at == datetime(2030, 1, 16, 8, 0, tzinfo=UTC)
    assert zone_times(state) == [
        ZoneTime("Asia/Tokyo", datetime(2030, 1, 16, 0, 0, tzinfo=UTC), 2),
        ZoneTime("Europe/Berlin", datetime(2030, 1, 16, 8, 0, tzinfo=UTC), 1),
        ZoneTime("America/New_York", datetime(2030, 1, 16, 14, 0, tzinfo=UTC), 2),
    ]
    # It really starts when Tokyo reaches 09:00: eight hours before the account's send time.
    assert first_release_at(state) == datetime(2030, 1, 16, 0, 0, tzinfo=UTC)


def test_fixed_mode_has_no_zone_times_and_starts_at_its_send_time() -> None:
    sim = Simulator()
    message = sim.create()
    sim.add(message, contacts(2, zones=("Asia/Tokyo",)))
    sim.send_now(message)
    state = sim.states[message]

    assert zone_times(state) is None
    assert state.schedule is not None and first_release_at(state) == state.schedule.send_at


def test_under_skip_the_zones_a_resume_now_would_skip_show_while_paused() -> None:
    sim, message = zoned()
    sim.now = datetime(2030, 1, 16, 0, 0, 30, tzinfo=UTC)
    for _ in range(3):
        sim.tick()  # Tokyo is due: its recipients go
    sim.run(PauseMessage(command_id=sim.new_id(), message_id=message))
    paused_at = sim.now
    times = zone_times(sim.states[message])
    assert times is not None

    def skipped(now: datetime) -> list[str] | None:
        return zones_to_skip("paused", "skip", paused_at, times, now)

    # Nothing became due during the pause yet; Berlin then New York do.
    assert skipped(datetime(2030, 1, 16, 7, 0, tzinfo=UTC)) == []
    assert skipped(datetime(2030, 1, 16, 9, 0, tzinfo=UTC)) == ["Europe/Berlin"]
    assert skipped(datetime(2030, 1, 16, 15, 0, tzinfo=UTC)) == [
        "Europe/Berlin",
        "America/New_York",
    ]
    # Not paused, or the default policy: nothing is skipped.
    late = datetime(2030, 1, 16, 15, 0, tzinfo=UTC)
    assert zones_to_skip("sending", "skip", None, times, late) is None
    assert zones_to_skip("paused", "send_on_resume", paused_at, times, late) is None
