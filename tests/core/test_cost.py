"""Cost: folding an event or a tick costs in proportion to what it changes, not to the audience.

Checked structurally (which entries are read, whether the book is copied), not with a timer; the
throughput figure comes from ``python -m bench.bench_planner`` (docs/core.md).
"""

from datetime import timedelta
from typing import SupportsIndex, overload

from core import ZoneQueue, evolve
from schemas import DeliveryPlan, RecipientsRemoved, RemoveRecipients, ScheduleMessage

from .dsl import T0, Sim, cmd, contact, ev


class CountingList(list[int]):
    """A queue's slots that count how many are read."""

    reads = 0

    @overload
    def __getitem__(self, i: SupportsIndex) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> list[int]: ...
    def __getitem__(self, i: SupportsIndex | slice) -> int | list[int]:
        CountingList.reads += 1
        return super().__getitem__(i)


def big_message(n: int = 20_000, rate: int = 10) -> Sim:
    # Free-running releases (no outcomes are recorded here): no in-flight window.
    sim = Sim(
        DeliveryPlan(release_rate=rate, max_in_flight=None), [contact(f"c{i}") for i in range(n)]
    )
    sim.do(cmd(ScheduleMessage, send_at=T0))
    return sim


def counting(queue: ZoneQueue) -> None:
    queue.items = CountingList(queue.items)  # type: ignore[assignment]


def test_folding_an_event_does_not_copy_the_audience() -> None:
    sim = big_message()
    before = sim.s
    removed = ev(RecipientsRemoved, contact_ids=("c1",)).model_copy(
        update={"sequence": before.version + 1}
    )
    after = evolve(before, removed)
    assert after.book is before.book
    assert after is not before and after.version == before.version + 1


def test_a_tick_reads_only_the_entries_it_releases() -> None:
    sim = big_message(rate=10)
    for queue in sim.s.book.queues.values():
        counting(queue)
    CountingList.reads = 0
    sim.tick(T0)
    sim.tick(T0 + timedelta(seconds=1))
    assert len(sim.released) == 20
    assert CountingList.reads <= 3 * 20


def test_removed_entries_are_passed_over_once() -> None:
    sim = big_message(rate=10)
    sim.do(cmd(RemoveRecipients, contact_ids=tuple(f"c{i}" for i in range(1, 5000))))
    for queue in sim.s.book.queues.values():
        counting(queue)
    CountingList.reads = 0
    for second in range(5):
        sim.tick(T0 + timedelta(seconds=second))
    # The removed block is passed over twice: by the tick's look-ahead and by the fold's head.
    assert CountingList.reads <= 3 * 50 + 2 * 4999
    CountingList.reads = 0
    for second in range(5, 10):
        sim.tick(T0 + timedelta(seconds=second))
    assert len(sim.released) == 100
    assert CountingList.reads <= 3 * 50  # ... and never again
