"""Property tests: random interleavings of commands, audience changes, outcomes and ticks.

Invariants, checked on every run:

* no contact id, and no normalized address, is released twice;
* nothing is released while paused, after cancel, once sent, or at/after the end date;
* no recipient is released before their zone's send time; a tick releases at most the rate;
  a throttle batch holds at most its size;
* without a cancel, when the clock runs on, every due contact ends released exactly once or
  with a reason (duplicate address, missed zone under ``skip``, end date) and the message is sent;
* the same events always fold to the same state, and the same program yields the same events.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from hypothesis import given, note
from hypothesis import strategies as st

from core import (
    Context,
    DomainError,
    MessageState,
    MessageStatus,
    RecipientStatus,
    decide,
    evolve,
    local_to_instant,
    plan,
)
from core.contacts import MemoryContacts
from schemas import (
    AddRecipients,
    CancelMessage,
    Contact,
    Content,
    CreateDraft,
    DeliveryPlan,
    Event,
    FailedRecipient,
    PauseMessage,
    RecipientsReleased,
    RecordDeliveryOutcomes,
    RemoveRecipients,
    ResumeMessage,
    ScheduleMessage,
    Throttle,
    Tick,
    UnscheduleMessage,
)

from .dsl import DELIVERY, OPERATOR

NS = UUID("1b7c0d9e-3f4a-4b5c-8d6e-7f8091a2b3c4")
START = datetime(2030, 3, 9, 12, 0, tzinfo=UTC)  # New York springs forward the next night
ZONES = [
    None,
    "Asia/Tokyo",
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
]
CONTENT = Content(name="p", from_address="p@example.org", subject="s", body="b")

contacts_st = st.builds(
    lambda i, mail, zone: Contact(
        contact_id=f"c{i}", email=f"{'U' if i % 3 == 0 else 'u'}{mail}@example.org", time_zone=zone
    ),
    st.integers(0, 14),
    st.integers(0, 9),
    st.sampled_from(ZONES),
)
ids_st = st.lists(st.integers(0, 14).map(lambda i: f"c{i}"), min_size=1, max_size=5)
op_st = st.one_of(
    st.tuples(st.just("add"), st.lists(contacts_st, min_size=1, max_size=5)),
    st.tuples(st.just("remove"), ids_st),
    st.tuples(st.just("pause")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("cancel")),
    st.tuples(st.just("unschedule")),
    st.tuples(st.just("schedule")),
    st.tuples(st.just("outcomes"), st.integers(0, 2**16)),
    st.tuples(
        st.just("tick"),
        st.sampled_from([0.25, 0.5, 1, 1, 1, 3, 30, 61, 600, 3 * 3600, 9 * 3600]),
    ),
)


@st.composite
def plans(draw: st.DrawFn) -> DeliveryPlan:
    mode = draw(st.sampled_from(["fixed", "throttled", "recipient_timezone"]))
    rate = draw(st.integers(1, 4))
    if mode == "throttled":
        end = draw(st.none() | st.integers(30, 3600 * 4))
        return DeliveryPlan(
            release_rate=rate,
            throttle=Throttle(
                batch_size=draw(st.integers(1, 4)),
                interval_seconds=60,
                end_at=None if end is None else START + timedelta(minutes=5, seconds=end),
            ),
        )
    return DeliveryPlan(
        mode=mode,  # type: ignore[arg-type]
        release_rate=rate,
        missed_zone_policy=draw(st.sampled_from(["send_on_resume", "skip"])),
    )


@dataclass
class Run:
    """One message driven by a program; checks the per-step invariants as it goes."""

    delivery: DeliveryPlan
    message_id: UUID = field(default_factory=lambda: uuid5(NS, "m"))
    now: datetime = START
    state: MessageState | None = None
    log: list[Event] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    canceled: bool = False
    counter: int = 0
    # The contacts' data, which the book does not hold (read back as the dispatcher does).
    contacts: MemoryContacts = field(default_factory=MemoryContacts)

    def next_id(self) -> UUID:
        self.counter += 1
        return uuid5(NS, f"{self.counter}")

    @property
    def s(self) -> MessageState:
        assert self.state is not None
        return self.state

    def fold(self, events: list[Event]) -> None:
        for event in events:
            self.state = evolve(self.state, event)
            self.contacts.observe(event, self.state)
        self.log.extend(events)

    def contact(self, contact_id: str) -> Contact:
        return self.contacts.read(self.message_id, self.s.book, [contact_id])[0]

    def do(self, command_cls: type[Any], actor: Any = OPERATOR, **payload: Any) -> None:
        command = command_cls(command_id=self.next_id(), message_id=self.message_id, **payload)
        context = Context(now=self.now, actor=actor, default_time_zone="Europe/Paris")
        with contextlib.suppress(DomainError):  # a refused command changes nothing
            self.fold(decide(command, self.state, context))

    def schedule(self) -> None:
        if self.delivery.mode == "recipient_timezone":
            self.do(ScheduleMessage, send_at_local=datetime(2030, 3, 10, 2, 30))
        else:
            self.do(ScheduleMessage, send_at=self.now + timedelta(minutes=5))

    def tick(self, seconds: float) -> list[Event]:
        self.now += timedelta(seconds=seconds)
        before = self.s
        status, version = before.status, before.version
        batch, remaining = before.batch, before.batch_remaining
        events = plan(before, Tick(tick_id=self.next_id(), at=self.now))
        self.fold(events)
        released = [c for e in events if isinstance(e, RecipientsReleased) for c in e.contact_ids]
        if released:
            self.check_release(status, released, batch, remaining, version)
        self.released.extend(released)
        return events

    def check_release(
        self, status: MessageStatus, ids: list[str], batch: int | None, left: int, version: int
    ) -> None:
        state = self.s
        assert status in (MessageStatus.SCHEDULED, MessageStatus.SENDING), status
        assert len(ids) <= self.delivery.release_rate
        throttle = self.delivery.throttle
        if throttle is not None:
            assert throttle.end_at is None or self.now < throttle.end_at
            same_batch = state.batch == batch
            assert len(ids) <= (left if same_batch else throttle.batch_size)
        schedule = state.schedule
        assert schedule is not None
        for cid in ids:
            zone = self.contact(cid).time_zone
            assert schedule.due_for(zone or "") <= self.now, (cid, zone)

    def outcomes(self, seed: int) -> None:
        waiting = self.s.book.ids_with([RecipientStatus.RELEASED])
        if not waiting:
            return
        delivered, failed, unknown = [], [], []
        for i, cid in enumerate(waiting):
            kind = (seed >> (i % 16)) % 4
            if kind == 0:
                continue  # still in flight
            (delivered if kind == 1 else unknown if kind == 2 else failed).append(cid)
        if delivered or failed or unknown:
            self.do(
                RecordDeliveryOutcomes,
                actor=DELIVERY,
                delivered=tuple(delivered),
                failed=tuple(FailedRecipient(contact_id=c, reason="bounce") for c in failed),
                unknown=tuple(unknown),
            )

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "add":
            self.do(AddRecipients, contacts=tuple(op[1]))
        elif kind == "remove":
            self.do(RemoveRecipients, contact_ids=tuple(op[1]))
        elif kind == "pause":
            self.do(PauseMessage)
        elif kind == "resume":
            self.do(ResumeMessage)
        elif kind == "cancel":
            self.do(CancelMessage)
            self.canceled = self.s.status is MessageStatus.CANCELED
        elif kind == "unschedule":
            self.do(UnscheduleMessage)
        elif kind == "schedule":
            self.schedule()
        elif kind == "outcomes":
            self.outcomes(op[1])
        else:
            self.tick(op[1])

    def drain(self) -> None:
        """Let the clock run on: resume, schedule if needed, deliver everything, until sent."""
        if self.s.status is MessageStatus.PAUSED:
            self.do(ResumeMessage)
        if self.s.status is MessageStatus.DRAFT:
            self.do(ScheduleMessage, send_now=True)
        if self.s.status is MessageStatus.DRAFT:
            return  # refused (its end date has passed): a draft never sends
        step = 1.0
        for _ in range(2000):
            if self.s.status in (MessageStatus.SENT, MessageStatus.CANCELED):
                return
            events = self.tick(step)
            released = any(isinstance(e, RecipientsReleased) for e in events)
            self.outcomes(0xFFFF)  # everyone released so far gets an outcome (kind 1..3)
            # Busy: tick every second; idle: let ten minutes pass (a zone or a slot to come).
            step = 1.0 if released else 600.0
        raise AssertionError("the message never completed")


def execute(delivery: DeliveryPlan, audience: list[Contact], ops: list[tuple[Any, ...]]) -> Run:
    run = Run(delivery)
    run.do(CreateDraft, content=CONTENT, plan=delivery)
    if audience:
        run.do(AddRecipients, contacts=tuple(audience))
    run.schedule()
    for op in ops:
        run.apply(op)
    return run


def check_never_twice(run: Run) -> None:
    assert len(run.released) == len(set(run.released)), Counter(run.released).most_common(3)
    addresses = [run.contact(cid).email.lower() for cid in run.released]
    assert len(addresses) == len(set(addresses))


def check_fold_is_deterministic(run: Run) -> None:
    state: MessageState | None = None
    for event in run.log:
        state = evolve(state, event)
    assert state is not None
    assert state.snapshot() == run.s.snapshot()
    assert len({e.event_id for e in run.log}) == len(run.log)


def check_book_counts(state: MessageState) -> None:
    book = state.book
    actual = Counter(book.status_of(cid) for cid in book.slots)
    assert {k: v for k, v in book.counts.items() if v} == {k: v for k, v in actual.items() if v}
    assert sum(q.pending for q in book.queues.values()) == book.pending


programs = st.tuples(plans(), st.lists(contacts_st, max_size=12), st.lists(op_st, max_size=40))


@given(programs)
def test_no_contact_or_address_is_released_twice_and_nothing_while_stopped(
    program: tuple[DeliveryPlan, list[Contact], list[tuple[Any, ...]]],
) -> None:
    run = execute(*program)
    note(f"log: {[e.type for e in run.log]}")
    check_never_twice(run)
    check_book_counts(run.s)
    if run.canceled:
        released_after_cancel = False
        canceled_seen = False
        for event in run.log:
            canceled_seen = canceled_seen or event.type == "MessageCanceled"
            released_after_cancel |= canceled_seen and isinstance(event, RecipientsReleased)
        assert not released_after_cancel


@given(programs)
def test_without_cancel_every_due_contact_is_released_exactly_once_or_skipped_with_a_reason(
    program: tuple[DeliveryPlan, list[Contact], list[tuple[Any, ...]]],
) -> None:
    delivery, audience, ops = program
    run = execute(delivery, audience, [op for op in ops if op[0] != "cancel"])
    run.drain()
    if run.s.status is MessageStatus.DRAFT:
        assert not run.released
        return
    assert run.s.status is MessageStatus.SENT
    check_never_twice(run)
    check_book_counts(run.s)
    book = run.s.book
    allowed_skips = {"duplicate_address"}
    if delivery.missed_zone_policy == "skip" and delivery.mode == "recipient_timezone":
        allowed_skips.add("missed_zone_skip_policy")
    if delivery.throttle is not None and delivery.throttle.end_at is not None:
        allowed_skips.add("end_date_passed")
    released = set(run.released)
    for cid in book.slots:
        status = book.status_of(cid)
        assert status is not RecipientStatus.PENDING
        assert status is not RecipientStatus.RELEASED  # everyone got an outcome
        if status in (RecipientStatus.DELIVERED, RecipientStatus.FAILED, RecipientStatus.UNKNOWN):
            assert cid in released
        elif status is RecipientStatus.SKIPPED:
            assert book.reason_of(cid) in allowed_skips
            assert cid not in released
    check_fold_is_deterministic(run)


@given(programs)
def test_the_same_program_always_yields_the_same_events(
    program: tuple[DeliveryPlan, list[Contact], list[tuple[Any, ...]]],
) -> None:
    first = execute(*program)
    second = execute(*program)
    assert first.log == second.log
    check_fold_is_deterministic(first)


def test_the_due_time_of_the_property_schedule_crosses_a_dst_gap() -> None:
    # The timezone programs schedule 02:30 on 10 March 2030: absent in New York.
    assert local_to_instant(datetime(2030, 3, 10, 2, 30), "America/New_York") == datetime(
        2030, 3, 10, 7, 30, tzinfo=UTC
    )
