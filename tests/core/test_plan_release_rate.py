"""Release rate: at most R recipients per second of clock, so a pause takes effect in one tick."""

from datetime import timedelta

from schemas import DeliveryPlan, PauseMessage, ScheduleMessage

from .dsl import T0, Sim, cmd, contact


def sim_with(rate: int, n: int = 100, window: int | None = None) -> Sim:
    # These rules are about the rate alone: no in-flight window unless told (outcomes are not
    # recorded in most of them).
    plan = DeliveryPlan(release_rate=rate, max_in_flight=window)
    sim = Sim(plan, [contact(f"c{i}") for i in range(n)])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    return sim


def test_a_tick_releases_at_most_r_per_second_since_the_last_release() -> None:
    sim = sim_with(rate=20)
    assert len([e for e in sim.tick(T0) if e.type == "RecipientsReleased"]) == 1
    assert len(sim.released) == 20  # the first tick after the start has one second's budget
    sim.tick(T0 + timedelta(milliseconds=250))
    assert len(sim.released) == 25
    sim.tick(T0 + timedelta(milliseconds=500))
    assert len(sim.released) == 30


def test_a_long_gap_between_ticks_does_not_burst_beyond_one_second_of_budget() -> None:
    sim = sim_with(rate=20)
    sim.tick(T0)
    sim.tick(T0 + timedelta(minutes=10))
    assert len(sim.released) == 40


def test_a_tick_at_the_same_instant_releases_nothing_more() -> None:
    sim = sim_with(rate=20)
    sim.tick(T0)
    sim.tick(T0)
    assert len(sim.released) == 20


def test_slow_ticks_accumulate_budget_so_sending_never_stalls() -> None:
    sim = sim_with(rate=1000, n=3)
    sim.tick(T0 + timedelta(microseconds=0))
    assert len(sim.released) == 3


def test_a_pause_stops_releases_within_one_tick() -> None:
    sim = sim_with(rate=10)
    sim.tick(T0)
    slipped_before_pause = len(sim.released)
    sim.do(cmd(PauseMessage), now=T0 + timedelta(milliseconds=100))
    sim.run(until=T0 + timedelta(seconds=60))
    assert len(sim.released) == slipped_before_pause == 10


def test_max_in_flight_holds_releases_until_outcomes_come_back() -> None:
    """Given at most 30 in flight at 1,000 a second, the first tick releases 30, later ticks
    nothing until outcomes arrive, then exactly as many as came back."""
    sim = Sim(
        DeliveryPlan(release_rate=1000, max_in_flight=30), [contact(f"c{i}") for i in range(100)]
    )
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    assert len(sim.released) == 30
    sim.tick(T0 + timedelta(seconds=1))
    assert len(sim.released) == 30
    sim.deliver(*sim.released[:12])
    sim.tick(T0 + timedelta(seconds=2))
    assert len(sim.released) == 42


def test_without_max_in_flight_releases_do_not_wait_for_outcomes() -> None:
    sim = sim_with(rate=30)
    for second in range(3):
        sim.tick(T0 + timedelta(seconds=second))
    assert len(sim.released) == 90
    sim.tick(T0 + timedelta(seconds=3))
    assert len(sim.released) == 100


def test_the_default_plan_keeps_at_most_five_seconds_of_releases_in_flight() -> None:
    """Given the default plan at 30 a second (window 150), releases stop at 150 awaiting an
    outcome, and go on as outcomes come back."""
    sim = Sim(DeliveryPlan(release_rate=30), [contact(f"c{i}") for i in range(300)])
    assert sim.s.plan.max_in_flight == 150
    sim.do(cmd(ScheduleMessage, send_at=T0))
    for second in range(8):
        sim.tick(T0 + timedelta(seconds=second))
    assert len(sim.released) == 150
    sim.deliver(*sim.released[:20])
    sim.tick(T0 + timedelta(seconds=8))
    assert len(sim.released) == 170
    sim.tick(T0 + timedelta(seconds=9))
    assert len(sim.released) == 170
