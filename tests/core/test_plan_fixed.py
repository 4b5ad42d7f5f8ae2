"""Planning in fixed mode: everyone at the send time, at the release rate, once."""

from datetime import timedelta

from core import MessageStatus, RecipientStatus
from schemas import DeliveryPlan, ScheduleMessage

from .dsl import T0, Sim, cmd, contact


def test_nothing_is_released_before_the_send_time() -> None:
    sim = Sim(audience=[contact("a")])
    sim.do(cmd(ScheduleMessage, send_at=T0 + timedelta(hours=1)))
    sim.run(until=T0 + timedelta(minutes=59, seconds=59), step=timedelta(minutes=1))
    assert sim.released == []
    assert sim.status is MessageStatus.SCHEDULED


def test_everyone_is_released_from_the_send_time_in_the_order_they_were_added() -> None:
    sim = Sim(DeliveryPlan(release_rate=10), [contact(f"c{i:02}") for i in range(35)])
    sim.do(cmd(ScheduleMessage, send_at=T0 + timedelta(hours=1)))
    sim.now = T0 + timedelta(hours=1)
    started = sim.tick(sim.now)
    assert started[0].type == "SendingStarted"
    sim.run(until=T0 + timedelta(hours=1, seconds=10))
    assert sim.released == [f"c{i:02}" for i in range(35)]
    assert sim.status is MessageStatus.SENT


def test_a_late_first_tick_starts_the_message_at_once() -> None:
    sim = Sim(audience=[contact("a")])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0 + timedelta(minutes=7))
    assert sim.released == ["a"]


def test_the_same_tick_planned_twice_gives_the_same_events() -> None:
    from core import plan
    from schemas import Tick

    from .dsl import new_id

    sim = Sim(DeliveryPlan(release_rate=3), [contact(f"c{i}") for i in range(5)])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    tick = Tick(tick_id=new_id(), at=T0)
    assert plan(sim.s, tick) == plan(sim.s, tick)
    assert sim.s.book.counts[RecipientStatus.PENDING] == 5  # planning changed nothing
