"""Schedule (or send now): a draft becomes scheduled, with its send time validated."""

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from bench.harness.histories import Simulator, contacts
from core import CommandNotAllowedError, InvalidCommandError, MessageStatus
from schemas import (
    DeliveryPlan,
    DraftCreated,
    MessageScheduled,
    ScheduleMessage,
    SendingStarted,
    Throttle,
)

from .dsl import CONTENT, T0, ZONE, cmd, ctx, ev, given, raises_validation

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())
in_an_hour = T0 + timedelta(hours=1)


def test_scheduling_a_draft_at_a_future_instant() -> None:
    outcome = given(created).when(cmd(ScheduleMessage, send_at=in_an_hour))
    outcome.then(ev(MessageScheduled, send_at=in_an_hour, default_time_zone=ZONE))
    assert outcome.state().status is MessageStatus.SCHEDULED


def test_send_now_schedules_at_the_current_time_and_the_next_tick_starts_sending() -> None:
    outcome = given(created).when(cmd(ScheduleMessage, send_now=True))
    outcome.then(ev(MessageScheduled, send_at=T0, default_time_zone=ZONE, send_now=True))
    history = given(created, *outcome.events)
    assert history.at(T0 + timedelta(seconds=1)).types == ["SendingStarted", "MessageSent"]


def test_a_send_time_in_the_past_beyond_the_grace_is_rejected() -> None:
    error = (
        given(created)
        .when(cmd(ScheduleMessage, send_at=T0 - timedelta(minutes=6)))
        .then_raises(InvalidCommandError)
    )
    assert isinstance(error, InvalidCommandError) and error.field == "send_at"


def test_a_send_time_within_the_grace_is_accepted() -> None:
    given(created).when(cmd(ScheduleMessage, send_at=T0 - timedelta(minutes=4))).then(
        ev(MessageScheduled, send_at=T0 - timedelta(minutes=4), default_time_zone=ZONE)
    )


def test_the_end_date_must_lie_after_the_send_time() -> None:
    throttled = DeliveryPlan(
        throttle=Throttle(batch_size=10, interval_seconds=60, end_at=in_an_hour)
    )
    draft = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=throttled)
    error = (
        given(draft).when(cmd(ScheduleMessage, send_at=in_an_hour)).then_raises(InvalidCommandError)
    )
    assert isinstance(error, InvalidCommandError) and error.field == "plan.throttle.end_at"


def test_a_local_send_time_in_recipient_timezone_mode_keeps_the_wall_clock() -> None:
    tz = ev(
        DraftCreated,
        account_id="acct-1",
        content=CONTENT,
        plan=DeliveryPlan(mode="recipient_timezone"),
    )
    local = datetime(2030, 7, 1, 9, 0)
    given(tz).when(cmd(ScheduleMessage, send_at_local=local), ctx(zone="Europe/London")).then(
        ev(
            MessageScheduled,
            send_at=datetime(2030, 7, 1, 8, 0, tzinfo=UTC),
            send_at_local=local,
            default_time_zone="Europe/London",
        )
    )


def test_scheduling_again_for_the_same_time_is_a_no_op() -> None:
    scheduled = ev(MessageScheduled, send_at=in_an_hour, default_time_zone=ZONE)
    given(created, scheduled).when(cmd(ScheduleMessage, send_at=in_an_hour)).then_nothing()


def test_scheduling_a_scheduled_message_for_another_time_is_a_conflict() -> None:
    scheduled = ev(MessageScheduled, send_at=in_an_hour, default_time_zone=ZONE)
    error = (
        given(created, scheduled)
        .when(cmd(ScheduleMessage, send_at=in_an_hour + timedelta(hours=1)))
        .then_raises(CommandNotAllowedError)
    )
    assert "UnscheduleMessage" in str(error)


def test_a_sending_message_cannot_be_scheduled() -> None:
    scheduled = ev(MessageScheduled, send_at=T0, default_time_zone=ZONE)
    given(created, scheduled, ev(SendingStarted)).when(
        cmd(ScheduleMessage, send_at=in_an_hour)
    ).then_raises(CommandNotAllowedError)


@pytest.mark.parametrize(
    "times",
    [{}, {"send_now": True, "send_at": in_an_hour}],
    ids=["none", "two"],
)
def test_exactly_one_send_time_is_given(times: dict[str, object]) -> None:
    raises_validation(cmd, ScheduleMessage, **times)


def test_throttle_is_not_offered_with_recipient_timezone_delivery() -> None:
    raises_validation(
        DeliveryPlan,
        mode="recipient_timezone",
        throttle=Throttle(batch_size=10, interval_seconds=60),
    )


def test_a_batch_must_fit_its_interval_at_the_release_rate() -> None:
    raises_validation(
        DeliveryPlan, release_rate=10, throttle=Throttle(batch_size=601, interval_seconds=60)
    )


def _zoned_draft(zones: tuple[str | None, ...], now: datetime) -> tuple[Simulator, UUID]:
    sim = Simulator(now=now, zone="Europe/Berlin")
    message = sim.create(plan=DeliveryPlan(mode="recipient_timezone"))
    sim.add(message, contacts(2, zones=zones))
    return sim, message


def test_a_recipient_timezone_send_time_is_in_the_past_only_once_the_latest_zone_passed_it() -> (
    None
):
    """09:00 local on 16 January 2030: 08:00 UTC in Berlin (the account's zone), 14:00 UTC in
    New York. At 10:00 UTC it has passed in Berlin but not in New York: accepted (Berlin's
    recipients go at once when it starts); refused once New York has passed it too, or when
    the audience is only in zones that passed it."""
    local = datetime(2030, 1, 16, 9, 0)
    schedule = {"send_at_local": local}

    sim, message = _zoned_draft(("America/New_York", None), datetime(2030, 1, 16, 10, tzinfo=UTC))
    sim.run(ScheduleMessage(command_id=sim.new_id(), message_id=message, **schedule))
    assert sim.states[message].status is MessageStatus.SCHEDULED

    for zones, now in (
        (("America/New_York", None), datetime(2030, 1, 16, 15, tzinfo=UTC)),
        (("Europe/Berlin", None), datetime(2030, 1, 16, 10, tzinfo=UTC)),
    ):
        sim, message = _zoned_draft(zones, now)
        with pytest.raises(InvalidCommandError) as refused:
            sim.run(ScheduleMessage(command_id=sim.new_id(), message_id=message, **schedule))
        assert refused.value.field == "send_at_local"
