"""Valid histories built with the core, for the projections' tests and benchmark.

:class:`Simulator` decides commands and plans ticks exactly as the processor does (``decide``,
``plan``, ``evolve``), so every history it produces is one the processor could have written:
sequences without gaps, ids from the core, planner events on ticks. It does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid5

from bench.harness.processor import unchecked_add
from core import Context, MessageState, MessageStatus, decide, evolve, plan
from core.contacts import MemoryContacts, copy_context
from schemas import (
    MAX_CHUNK,
    Actor,
    Command,
    Contact,
    Content,
    CopyMessage,
    CreateDraft,
    DeliveryPlan,
    Event,
    RecipientsReleased,
    RecordDeliveryOutcomes,
    ScheduleMessage,
    Tick,
)

__all__ = ["CONTENT", "NS", "OPERATOR", "T0", "Simulator", "contacts", "sends_history"]

NS = UUID("3c5b8a10-8f0e-4d1a-b2a4-6e2f4c9d7a11")
T0 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
OPERATOR = Actor(kind="user", account_id="acct-a", user_id="ada")
DELIVERY = Actor(kind="service", account_id="acct-a", service="delivery")
CONTENT = Content(name="News", from_address="news@example.org", subject="Hi", body="Hello")


class Simulator:
    """Messages driven by commands and ticks through the core; every event in ``events``."""

    def __init__(self, now: datetime = T0, zone: str = "UTC") -> None:
        self.now = now
        self.zone = zone
        self.states: dict[UUID, MessageState] = {}
        self.events: list[Event] = []
        self._ids = 0
        # The contacts' data (the books hold none): a copy's audience is read back from here.
        self.contacts = MemoryContacts()

    def new_id(self, kind: str = "id") -> UUID:
        self._ids += 1
        return uuid5(NS, f"{kind}-{self._ids}")

    def _fold(self, events: list[Event]) -> list[Event]:
        for event in events:
            state = evolve(self.states.get(event.message_id), event)
            self.states[event.message_id] = state
            self.contacts.observe(event, state)
        self.events.extend(events)
        return events

    def run(self, command: Command, actor: Actor = OPERATOR) -> list[Event]:
        """Decide ``command`` now (raises the core's errors) and fold its events."""
        state = self.states.get(command.message_id)
        ctx = Context(now=self.now, actor=actor, default_time_zone=self.zone)
        if isinstance(command, CopyMessage):
            ctx = copy_context(ctx, state, self.contacts)
        return self._fold(decide(command, state, ctx))

    def tick(self, advance: timedelta = timedelta(seconds=1)) -> list[Event]:
        """Move the clock and plan a tick for every message that a tick can change."""
        self.now += advance
        tick = Tick(tick_id=self.new_id("tick"), at=self.now)
        out: list[Event] = []
        for message_id in list(self.states):
            state = self.states[message_id]
            if state.status in (MessageStatus.SCHEDULED, MessageStatus.SENDING):
                out += self._fold(plan(state, tick))
        return out

    # ---------------------------------------------------------------- shortcuts

    def create(
        self,
        message_id: UUID | None = None,
        plan: DeliveryPlan | None = None,
        actor: Actor = OPERATOR,
    ) -> UUID:
        message_id = message_id or self.new_id("message")
        self.run(
            CreateDraft(
                command_id=self.new_id(),
                message_id=message_id,
                content=CONTENT,
                plan=plan or DeliveryPlan(),
            ),
            actor,
        )
        return message_id

    def add(self, message_id: UUID, contacts: list[Contact]) -> None:
        for i in range(0, len(contacts), MAX_CHUNK):
            chunk = tuple(contacts[i : i + MAX_CHUNK])
            self.run(unchecked_add(message_id, chunk, self.new_id()))

    def send_now(self, message_id: UUID) -> None:
        self.run(ScheduleMessage(command_id=self.new_id(), message_id=message_id, send_now=True))

    def deliver(
        self,
        message_id: UUID,
        delivered: tuple[str, ...] = (),
        failed: tuple[tuple[str, str], ...] = (),
        unknown: tuple[str, ...] = (),
        returned: tuple[tuple[str, int], ...] = (),
    ) -> list[Event]:
        command = RecordDeliveryOutcomes.model_validate(
            {
                "command_id": self.new_id(),
                "message_id": message_id,
                "delivered": delivered,
                "failed": [{"contact_id": c, "reason": r} for c, r in failed],
                "unknown": unknown,
                "returned": [{"contact_id": c, "release": n} for c, n in returned],
            }
        )
        return self.run(command, actor=DELIVERY)


def contacts(n: int, prefix: str = "c", zones: tuple[str | None, ...] = (None,)) -> list[Contact]:
    """``n`` valid contacts, built without validation (fast enough for a million)."""
    return [
        Contact.model_construct(
            contact_id=f"{prefix}{i}",
            email=f"{prefix}{i}@example.org",
            time_zone=zones[i % len(zones)],
            attributes={},
        )
        for i in range(n)
    ]


def sends_history(
    messages: int, recipients: int, *, rate: int = 10_000, fail_every: int = 0
) -> Iterator[Event]:
    """``messages`` messages of ``recipients`` each, added, sent now, every recipient released
    (``rate`` per second of simulated clock) and delivered (every ``fail_every``-th failed)."""
    sim = Simulator()
    ids = []
    for m in range(messages):
        message_id = sim.create(plan=DeliveryPlan(release_rate=rate))
        sim.add(message_id, contacts(recipients, prefix=f"m{m}c"))
        sim.send_now(message_id)
        ids.append(message_id)
    yield from sim.events
    sim.events.clear()
    while any(sim.states[m].status is not MessageStatus.SENT for m in ids):
        for event in sim.tick():
            if isinstance(event, RecipientsReleased):
                released = event.contact_ids
                failed = tuple(
                    (c, "550 mailbox unavailable")
                    for i, c in enumerate(released)
                    if fail_every and i % fail_every == 0
                )
                failed_ids = {c for c, _ in failed}
                sim.deliver(
                    event.message_id,
                    delivered=tuple(c for c in released if c not in failed_ids),
                    failed=failed,
                )
        yield from sim.events
        sim.events.clear()
