"""Planner benchmark: a 1,000,000-recipient message planned to completion.

For each mode (fixed, throttled, recipient_timezone) the benchmark builds the message through the
core (contacts added in chunks of 10,000), schedules it, then ticks once per second of simulated
clock until the message is sent: each tick's events are folded back, and the released recipients'
delivery outcomes are recorded through the core and folded too, as the dispatcher and the delivery
step would. CPU time is ``time.process_time()``; the figure is recipients per CPU-second of the
planning phase (schedule to sent). Building the audience is reported separately: its cost is
mostly pydantic validating contacts, which the shell pays when it decodes commands; the part
spent in the core (deciding and folding the adds) is shown in brackets.

Usage: ``python -m bench.bench_planner [--recipients N] [--rate R]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid5

from core import Context, MessageState, MessageStatus, decide, evolve, plan
from schemas import (
    MAX_CHUNK,
    Actor,
    AddRecipients,
    Contact,
    Content,
    CreateDraft,
    DeliveryPlan,
    Event,
    RecipientsReleased,
    RecordDeliveryOutcomes,
    ScheduleMessage,
    Throttle,
    Tick,
)

_NS = UUID("5d8e0f0e-1c36-4c1e-9a59-0b1e8f3f2a10")
_ZONES = (
    None,
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Europe/Berlin",
)
_ACTOR = Actor(kind="user", account_id="acct-bench", user_id="bench")
_T0 = datetime(2030, 3, 9, 12, 0, tzinfo=UTC)


@dataclass
class Result:
    mode: str
    recipients: int
    build_cpu: float
    add_fold_cpu: float
    plan_cpu: float
    ticks: int
    events: int

    @property
    def per_second(self) -> float:
        return self.recipients / self.plan_cpu if self.plan_cpu else float("inf")


def _uuid(*parts: object) -> UUID:
    return uuid5(_NS, ":".join(str(p) for p in parts))


def _fold(state: MessageState, events: list[Event]) -> MessageState:
    for event in events:
        state = evolve(state, event)
    return state


def run(mode: str, recipients: int, rate: int) -> Result:
    """Build, schedule and plan one message to completion; returns the CPU figures."""
    message_id = _uuid(mode, "message")
    ctx = Context(now=_T0, actor=_ACTOR, default_time_zone="Europe/Paris")
    if mode == "throttled":
        delivery = DeliveryPlan(
            release_rate=rate,
            throttle=Throttle(batch_size=rate * 30, interval_seconds=60),
        )
    elif mode == "timezone":
        delivery = DeliveryPlan(mode="recipient_timezone", release_rate=rate)
    else:
        delivery = DeliveryPlan(release_rate=rate)
    content = Content(name="bench", from_address="news@example.org", subject="Hi", body="Hello")

    started = time.process_time()
    create = CreateDraft(
        command_id=_uuid(mode, "create"), message_id=message_id, content=content, plan=delivery
    )
    state = evolve(None, decide(create, None, ctx)[0])
    add_fold_cpu = 0.0
    for chunk in range(0, recipients, MAX_CHUNK):
        contacts = tuple(
            Contact(
                contact_id=f"c{i}",
                email=f"user{i}@example.org",
                time_zone=_ZONES[i % len(_ZONES)],
            )
            for i in range(chunk, min(chunk + MAX_CHUNK, recipients))
        )
        add = AddRecipients(
            command_id=_uuid(mode, "add", chunk), message_id=message_id, contacts=contacts
        )
        folding = time.process_time()
        state = _fold(state, decide(add, state, ctx))
        add_fold_cpu += time.process_time() - folding
    build_cpu = time.process_time() - started

    started = time.process_time()
    if mode == "timezone":
        schedule = ScheduleMessage(
            command_id=_uuid(mode, "schedule"),
            message_id=message_id,
            send_at_local=datetime(2030, 3, 10, 9, 0),
        )
    else:
        schedule = ScheduleMessage(
            command_id=_uuid(mode, "schedule"),
            message_id=message_id,
            send_at=_T0 + timedelta(minutes=10),
        )
    state = _fold(state, decide(schedule, state, ctx))
    at = _T0 + timedelta(minutes=10)
    ticks = events_total = 0
    outcome_ctx = Context(
        now=_T0, actor=Actor(kind="service", account_id="acct-bench", service="delivery")
    )
    # Ticks are one simulated second apart; long idle stretches (waiting for the next zone or
    # throttle slot) are jumped over to the next due moment, as a real clock would just pass them.
    while state.status is not MessageStatus.SENT:
        ticks += 1
        tick = Tick(tick_id=_uuid(mode, "tick", ticks), at=at)
        events = plan(state, tick)
        events_total += len(events)
        state = _fold(state, events)
        released = [c for e in events if isinstance(e, RecipientsReleased) for c in e.contact_ids]
        if released:
            record = RecordDeliveryOutcomes(
                command_id=_uuid(mode, "outcome", ticks),
                message_id=message_id,
                delivered=tuple(released),
            )
            outcomes = decide(record, state, outcome_ctx)
            events_total += len(outcomes)
            state = _fold(state, outcomes)
            at += timedelta(seconds=1)
        else:
            at = _next_moment(state, at)
    plan_cpu = time.process_time() - started
    return Result(mode, recipients, build_cpu, add_fold_cpu, plan_cpu, ticks, events_total)


def _next_moment(state: MessageState, at: datetime) -> datetime:
    """The next second at which something can happen (idle ticks cost nothing but clock)."""
    candidates = [at + timedelta(seconds=1)]
    if state.plan.throttle is not None and state.schedule is not None:
        candidates.append(state.slot_at(state.last_slot_until(at) + 1))
    if state.plan.mode == "recipient_timezone":
        candidates.extend(
            q.due for q in state.book.queues.values() if q.pending and q.due and q.due > at
        )
    later = [c for c in candidates if c > at]
    if len(later) > 1:
        return min(later[1:])
    return later[0]


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000, help="release_rate per second")
    parser.add_argument("--modes", default="fixed,throttled,timezone")
    args = parser.parse_args(argv)
    results = []
    for mode in args.modes.split(","):
        result = run(mode, args.recipients, args.rate)
        results.append(result)
        out(
            f"{mode:<10} recipients={result.recipients:>9,} "
            f"build_cpu={result.build_cpu:6.2f}s (decide+fold {result.add_fold_cpu:5.2f}s) "
            f"plan_cpu={result.plan_cpu:6.2f}s "
            f"ticks={result.ticks:>7,} events={result.events:>7,} "
            f"planned={result.per_second:>11,.0f} recipients/CPU-s"
        )
    return results


if __name__ == "__main__":
    main()
