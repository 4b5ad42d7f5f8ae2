"""Planning in recipient_timezone mode: each recipient at the wall-clock send time of their zone.

DST rule: a local time in a spring-forward gap is moved forward by the gap; a local time that
happens twice (fall-back) is sent at its first occurrence.
"""

from datetime import UTC, datetime, timedelta

import pytest

from core import MessageStatus, RecipientStatus, local_to_instant, start_instant
from schemas import DeliveryPlan, PauseMessage, ResumeMessage, ScheduleMessage

from .dsl import Sim, cmd, contact

EVE = datetime(2030, 1, 14, 12, 0, tzinfo=UTC)
NINE = datetime(2030, 1, 15, 9, 0)  # wall clock, every zone
TOKYO_9 = datetime(2030, 1, 15, 0, 0, tzinfo=UTC)
LONDON_9 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
NEW_YORK_9 = datetime(2030, 1, 15, 14, 0, tzinfo=UTC)


def tz_sim(policy: str = "send_on_resume", rate: int = 1000, local: datetime = NINE) -> Sim:
    sim = Sim(
        DeliveryPlan(mode="recipient_timezone", missed_zone_policy=policy, release_rate=rate),  # type: ignore[arg-type]
        [
            contact("tokyo", "Asia/Tokyo"),
            contact("london", "Europe/London"),
            contact("newyork", "America/New_York"),
            contact("nozone"),
        ],
        zone="Europe/London",
        now=EVE,
    )
    sim.do(cmd(ScheduleMessage, send_at_local=local))
    return sim


@pytest.mark.parametrize(
    ("local", "zone", "expected"),
    [
        # 02:30 does not exist on 10 March 2030 in New York: sent at 03:30 EDT.
        (datetime(2030, 3, 10, 2, 30), "America/New_York", datetime(2030, 3, 10, 7, 30)),
        # 01:30 happens twice on 27 October 2030 in London: the first (BST) counts.
        (datetime(2030, 10, 27, 1, 30), "Europe/London", datetime(2030, 10, 27, 0, 30)),
        # Lord Howe moves its clocks by 30 minutes: 02:15 does not exist, sent at 02:45.
        (datetime(2030, 10, 6, 2, 15), "Australia/Lord_Howe", datetime(2030, 10, 5, 15, 45)),
        # ... and 01:45 happens twice in April: the first (+11:00) counts.
        (datetime(2030, 4, 7, 1, 45), "Australia/Lord_Howe", datetime(2030, 4, 6, 14, 45)),
        # Kathmandu is UTC+05:45 all year.
        (datetime(2030, 1, 15, 9, 0), "Asia/Kathmandu", datetime(2030, 1, 15, 3, 15)),
    ],
    ids=["ny-gap", "london-fold", "lord-howe-gap", "lord-howe-fold", "kathmandu"],
)
def test_local_send_times_resolve_deterministically_across_dst(
    local: datetime, zone: str, expected: datetime
) -> None:
    assert local_to_instant(local, zone) == expected.replace(tzinfo=UTC)


def test_each_recipient_gets_it_at_the_send_time_in_their_own_zone() -> None:
    sim = tz_sim()
    sim.run(until=NEW_YORK_9, step=timedelta(minutes=30))
    sim.tick(NEW_YORK_9 + timedelta(seconds=1))
    assert sim.released_at("tokyo") == TOKYO_9
    assert sim.released_at("london") == LONDON_9
    assert sim.released_at("nozone") == LONDON_9  # the account's default zone
    assert sim.released_at("newyork") == NEW_YORK_9
    assert sim.status is MessageStatus.SENT


def test_a_dst_gap_recipient_is_released_after_the_gap() -> None:
    sim = Sim(
        DeliveryPlan(mode="recipient_timezone"),
        [contact("ny", "America/New_York")],
        now=datetime(2030, 3, 9, 0, 0, tzinfo=UTC),
    )
    sim.do(cmd(ScheduleMessage, send_at_local=datetime(2030, 3, 10, 2, 30)))
    sim.tick(datetime(2030, 3, 10, 7, 29, 59, tzinfo=UTC))
    assert sim.released == []
    sim.tick(datetime(2030, 3, 10, 7, 30, tzinfo=UTC))
    assert sim.released == ["ny"]


def test_the_message_starts_when_the_first_zone_reaches_the_send_time() -> None:
    sim = tz_sim()
    assert start_instant(sim.s) == TOKYO_9
    assert sim.tick(TOKYO_9 - timedelta(seconds=1)) == []
    assert sim.tick(TOKYO_9)[0].type == "SendingStarted"
    assert sim.released == ["tokyo"]


def test_zones_already_past_the_send_time_when_it_starts_are_released_at_once() -> None:
    morning = datetime(2030, 1, 15, 5, 0, tzinfo=UTC)  # 14:00 in Tokyo, 05:00 in London
    sim = Sim(
        DeliveryPlan(mode="recipient_timezone"),
        [contact("tokyo", "Asia/Tokyo"), contact("london", "Europe/London")],
        zone="Europe/London",
        now=morning,
    )
    sim.do(cmd(ScheduleMessage, send_at_local=NINE))
    sim.tick(morning)
    assert sim.released == ["tokyo"]
    sim.tick(LONDON_9)
    assert sim.released == ["tokyo", "london"]


def test_missed_zones_are_released_on_resume_by_default() -> None:
    sim = tz_sim("send_on_resume")
    sim.tick(TOKYO_9)
    sim.do(cmd(PauseMessage), now=TOKYO_9 + timedelta(hours=1))
    sim.run(until=LONDON_9 + timedelta(hours=1), step=timedelta(minutes=10))
    assert sim.released == ["tokyo"]
    sim.do(cmd(ResumeMessage), now=LONDON_9 + timedelta(hours=2))
    sim.tick(LONDON_9 + timedelta(hours=2, seconds=1))
    assert sorted(sim.released) == ["london", "nozone", "tokyo"]
    sim.tick(NEW_YORK_9)
    assert sim.released_at("newyork") == NEW_YORK_9


def test_missed_zones_are_skipped_with_a_reason_under_the_skip_policy() -> None:
    sim = tz_sim("skip")
    sim.tick(TOKYO_9)
    sim.do(cmd(PauseMessage), now=TOKYO_9 + timedelta(hours=1))
    sim.do(cmd(ResumeMessage), now=LONDON_9 + timedelta(hours=2))
    sim.tick(LONDON_9 + timedelta(hours=2, seconds=1))
    book = sim.s.book
    assert book.status_of("london") is RecipientStatus.SKIPPED
    assert book.reason_of("london") == "missed_zone_skip_policy"
    assert book.status_of("nozone") is RecipientStatus.SKIPPED
    sim.tick(NEW_YORK_9)
    sim.deliver()
    sim.tick(NEW_YORK_9 + timedelta(seconds=1))
    assert sim.released == ["tokyo", "newyork"]
    assert sim.status is MessageStatus.SENT


def test_a_zone_in_progress_when_paused_completes_on_resume_even_under_skip() -> None:
    sim = Sim(
        DeliveryPlan(mode="recipient_timezone", missed_zone_policy="skip", release_rate=2),
        [contact(f"t{i}", "Asia/Tokyo") for i in range(5)],
        zone="Europe/London",
        now=EVE,
    )
    sim.do(cmd(ScheduleMessage, send_at_local=NINE))
    sim.tick(TOKYO_9)
    sim.do(cmd(PauseMessage), now=TOKYO_9 + timedelta(milliseconds=10))
    sim.do(cmd(ResumeMessage), now=TOKYO_9 + timedelta(hours=1))
    sim.run(until=TOKYO_9 + timedelta(hours=1, seconds=5))
    assert sim.released == [f"t{i}" for i in range(5)]


def test_contacts_added_while_paused_in_a_missed_zone_follow_the_policy() -> None:
    from schemas import AddRecipients

    sim = tz_sim("skip")
    sim.tick(TOKYO_9)
    sim.do(cmd(PauseMessage), now=TOKYO_9 + timedelta(hours=1))
    sim.do(cmd(AddRecipients, contacts=(contact("london2", "Europe/London"),)))
    sim.do(cmd(ResumeMessage), now=LONDON_9 + timedelta(hours=2))
    sim.tick(LONDON_9 + timedelta(hours=2, seconds=1))
    assert sim.s.book.reason_of("london2") == "missed_zone_skip_policy"
