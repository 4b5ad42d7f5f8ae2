"""Planning throttled sends: batches of N, one per interval, an end date; pause and resume."""

from datetime import timedelta

from core import MessageStatus, RecipientStatus
from schemas import (
    AddRecipients,
    DeliveryPlan,
    PauseMessage,
    ResumeMessage,
    ScheduleMessage,
    Throttle,
)

from .dsl import T0, Sim, cmd, contact, skipped_ids


def throttled(n: int = 10, size: int = 3, rate: int = 1000, end: int | None = None) -> Sim:
    end_at = T0 + timedelta(seconds=end) if end is not None else None
    sim = Sim(
        DeliveryPlan(
            release_rate=rate,
            throttle=Throttle(batch_size=size, interval_seconds=60, end_at=end_at),
        ),
        [contact(f"c{i}") for i in range(n)],
    )
    sim.do(cmd(ScheduleMessage, send_at=T0))
    return sim


def slots_of(sim: Sim) -> dict[str, int]:
    return {cid: int((at - T0).total_seconds()) for at, cid in sim.releases}


def test_one_batch_of_n_goes_out_per_interval_from_the_send_time() -> None:
    sim = throttled()
    sim.run(until=T0 + timedelta(seconds=241))
    times = slots_of(sim)
    assert [times[f"c{i}"] for i in range(10)] == [0, 0, 0, 60, 60, 60, 120, 120, 120, 180]
    assert sim.status is MessageStatus.SENT


def test_slots_inside_a_pause_are_not_made_up_the_rest_moves_to_later_slots() -> None:
    sim = throttled()
    sim.run(until=T0 + timedelta(seconds=29))
    sim.do(cmd(PauseMessage), now=T0 + timedelta(seconds=30))
    sim.run(until=T0 + timedelta(seconds=149))
    sim.do(cmd(ResumeMessage), now=T0 + timedelta(seconds=150))
    sim.run(until=T0 + timedelta(seconds=400))
    times = slots_of(sim)
    assert [times[f"c{i}"] for i in range(10)] == [0, 0, 0, 180, 180, 180, 240, 240, 240, 300]


def test_the_batch_in_progress_when_paused_completes_on_resume() -> None:
    sim = throttled(rate=1)  # one recipient per second: a batch of 3 takes 3 ticks
    sim.tick(T0)
    sim.do(cmd(PauseMessage), now=T0 + timedelta(milliseconds=500))
    sim.run(until=T0 + timedelta(seconds=99))
    assert sim.released == ["c0"]
    sim.do(cmd(ResumeMessage), now=T0 + timedelta(seconds=100))
    sim.run(until=T0 + timedelta(seconds=200))
    times = slots_of(sim)
    # c1, c2 finish batch 0 from the resume on; the next batch waits for its regular slot (120 s).
    assert [times[f"c{i}"] for i in range(6)] == [0, 100, 101, 120, 121, 122]


def test_nothing_is_released_after_the_end_date_and_the_rest_is_reported() -> None:
    sim = throttled(end=150)
    sim.run(until=T0 + timedelta(seconds=300))
    assert sorted(sim.released) == [f"c{i}" for i in range(9)]
    assert sim.s.book.status_of("c9") is RecipientStatus.SKIPPED
    assert sim.s.book.reason_of("c9") == "end_date_passed"
    assert max(at for at, _ in sim.releases) < T0 + timedelta(seconds=150)
    assert sim.status is MessageStatus.SENT


def test_a_slot_at_the_end_date_itself_is_not_released() -> None:
    sim = throttled(end=120)
    sim.run(until=T0 + timedelta(seconds=200))
    assert len(sim.released) == 6


def test_the_end_date_passing_during_a_pause_reports_the_rest_and_resume_releases_nothing() -> None:
    sim = throttled(end=150)
    sim.tick(T0)
    sim.do(cmd(PauseMessage), now=T0 + timedelta(seconds=1))
    events = sim.tick(T0 + timedelta(seconds=151))
    assert sorted(skipped_ids(events, "end_date_passed")) == sorted(f"c{i}" for i in range(3, 10))
    sim.do(cmd(ResumeMessage), now=T0 + timedelta(seconds=200))
    sim.run(until=T0 + timedelta(seconds=400))
    assert sim.released == ["c0", "c1", "c2"]


def test_contacts_added_while_sending_join_the_next_batches() -> None:
    sim = throttled(n=3)
    sim.run(until=T0 + timedelta(seconds=10), deliver=False)  # still sending: outcomes due
    sim.do(cmd(AddRecipients, contacts=(contact("late1"), contact("late2"))))
    sim.run(until=T0 + timedelta(seconds=70))
    assert slots_of(sim)["late1"] == 60 and slots_of(sim)["late2"] == 60


def test_after_a_slow_dispatcher_only_the_latest_due_slot_opens() -> None:
    sim = throttled()
    sim.tick(T0)
    sim.deliver()
    sim.tick(T0 + timedelta(seconds=200))  # slots 1 and 2 were never ticked
    assert len(sim.released) == 6
    assert sim.s.batch == 3
