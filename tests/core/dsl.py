"""A tiny Given / When / Then language for the core's tests.

``given(*events).when(command).then(*events)`` decides a command against the fold of past
events; ``given(...).at(instant).then(...)`` plans a tick. Events given or expected are written
with :func:`ev` and compared by type and payload (the envelope is the core's business and is
tested on its own). :class:`Sim` drives a message through commands and ticks for the planner
rules, remembering every release.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any, TypeVar
from uuid import UUID, uuid5

import pytest
from pydantic import ValidationError

from core import (
    Context,
    DomainError,
    MessageState,
    MessageStatus,
    RecipientStatus,
    decide,
    evolve,
    plan,
)
from core.contacts import MemoryContacts, copy_context
from schemas import (
    MAX_CHUNK,
    Actor,
    AddRecipients,
    Command,
    Contact,
    Content,
    CopyMessage,
    CreateDraft,
    DeliveryPlan,
    Event,
    EventBase,
    RecipientsReleased,
    RecipientsSkipped,
    RecordDeliveryOutcomes,
    ReturnedSend,
    Tick,
)

NS = UUID("9a0f7c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b")
MESSAGE = uuid5(NS, "message")
COPY = uuid5(NS, "copy")
ACCOUNT = "acct-1"
OPERATOR = Actor(kind="user", account_id=ACCOUNT, user_id="ada")
STRANGER = Actor(kind="user", account_id="acct-2", user_id="eve")
DELIVERY = Actor(kind="service", account_id=ACCOUNT, service="delivery")
ZONE = "Europe/London"
T0 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
CONTENT = Content(
    name="January news", from_address="news@example.org", subject="Hello {{first_name}}", body="Hi"
)
ENVELOPE = {
    "event_id",
    "message_id",
    "sequence",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "actor",
}
_ids = count(1)
C = TypeVar("C", bound=Command)
E = TypeVar("E", bound=EventBase)


def new_id() -> UUID:
    """A fresh id for a command or tick (deterministic per test run)."""
    return uuid5(NS, f"id-{next(_ids)}")


def cmd(cls: type[C], message_id: UUID = MESSAGE, **payload: Any) -> C:
    """A command for ``message_id`` with a fresh command id."""
    return cls(command_id=new_id(), message_id=message_id, **payload)


def ev(cls: type[E], at: datetime = T0, actor: Actor = OPERATOR, **payload: Any) -> E:
    """An event with a placeholder envelope (``given`` numbers it)."""
    return cls(
        event_id=new_id(),
        message_id=payload.pop("message_id", MESSAGE),
        sequence=1,
        occurred_at=at,
        correlation_id=new_id(),
        causation_id=new_id(),
        actor=actor,
        **payload,
    )


def contact(cid: str, zone: str | None = None, email: str | None = None) -> Contact:
    """A contact ``cid`` at ``cid@example.org`` unless told otherwise."""
    return Contact(contact_id=cid, email=email or f"{cid}@example.org", time_zone=zone)


def contacts(*ids: str, zone: str | None = None) -> tuple[Contact, ...]:
    return tuple(contact(cid, zone) for cid in ids)


def ctx(now: datetime = T0, actor: Actor = OPERATOR, zone: str = ZONE) -> Context:
    return Context(now=now, actor=actor, default_time_zone=zone)


def payload(event: EventBase) -> dict[str, Any]:
    """What an event says, without its envelope."""
    return {"type": event.type, **event.model_dump(exclude=ENVELOPE)}


def fold_all(events: Iterable[Event], state: MessageState | None = None) -> MessageState | None:
    for event in events:
        state = evolve(state, event)
    return state


def with_audience(
    command: Command, context: Context, events: Iterable[Event], message_id: UUID
) -> Context:
    """The context a copy is decided with: the audience's contacts, read back from a store of
    the folded events as the dispatcher does (the book holds no contact data)."""
    if not isinstance(command, CopyMessage):
        return context
    store = MemoryContacts()
    state: MessageState | None = None
    for event in events:
        if event.message_id == message_id:
            state = evolve(state, event)
            store.observe(event, state)
    return copy_context(context, state, store)


def released_ids(events: Iterable[Event]) -> list[str]:
    return [c for e in events if isinstance(e, RecipientsReleased) for c in e.contact_ids]


def skipped_ids(events: Iterable[Event], reason: str | None = None) -> list[str]:
    return [
        c
        for e in events
        if isinstance(e, RecipientsSkipped) and (reason is None or e.reason == reason)
        for c in e.contact_ids
    ]


@dataclass
class Outcome:
    """What happened when a command was decided or a tick planned."""

    events: list[Event] = field(default_factory=list)
    error: DomainError | None = None
    before: MessageState | None = None

    def then(self, *expected: EventBase) -> list[Event]:
        """The command produced exactly these events (compared without envelopes)."""
        assert self.error is None, f"unexpected {self.error!r}"
        assert [payload(e) for e in self.events] == [payload(e) for e in expected]
        return self.events

    def then_nothing(self) -> None:
        """A no-op: no events and no error."""
        assert self.error is None, f"unexpected {self.error!r}"
        assert self.events == []

    def then_raises(self, error: type[DomainError]) -> DomainError:
        assert self.error is not None, f"expected {error.__name__}, got events {self.events}"
        assert isinstance(self.error, error), f"expected {error.__name__}, got {self.error!r}"
        return self.error

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def state(self) -> MessageState:
        """The state after folding the outcome (consumes ``before``)."""
        state = fold_all(self.events, self.before)
        assert state is not None
        return state


class given:
    """Past events of the message, numbered 1, 2, 3 ... per message id."""

    def __init__(self, *events: Event) -> None:
        numbered: list[Event] = []
        versions: dict[UUID, int] = {}
        for event in events:
            version = versions.get(event.message_id, 0) + 1
            versions[event.message_id] = version
            numbered.append(event.model_copy(update={"sequence": version}))
        self.events = numbered

    def state(self, message_id: UUID = MESSAGE) -> MessageState | None:
        """A fresh fold of the given events of ``message_id`` (``None``: none given)."""
        return fold_all(e for e in self.events if e.message_id == message_id)

    def when(self, command: Command, context: Context | None = None) -> Outcome:
        state = self.state(command.message_id)
        context = with_audience(command, context or ctx(), self.events, command.message_id)
        try:
            events = decide(command, state, context)
        except DomainError as error:
            return Outcome(error=error, before=state)
        return Outcome(events=events, before=state)

    def at(self, instant: datetime) -> Outcome:
        """Plan the tick at ``instant``."""
        state = self.state()
        assert state is not None
        return Outcome(events=plan(state, Tick(tick_id=new_id(), at=instant)), before=state)


class Sim:
    """A message driven through real decisions and ticks, remembering every release."""

    def __init__(
        self,
        delivery: DeliveryPlan | None = None,
        audience: Iterable[Contact] = (),
        zone: str = ZONE,
        now: datetime = T0,
    ) -> None:
        self.zone = zone
        self.now = now
        self.log: list[Event] = []
        self.state: MessageState | None = None
        self.releases: list[tuple[datetime, str]] = []
        # The contacts' data, which the book does not hold: read back as the dispatcher does.
        self.contacts = MemoryContacts()
        self.do(cmd(CreateDraft, content=CONTENT, plan=delivery or DeliveryPlan()))
        everyone = tuple(audience)
        for i in range(0, len(everyone), MAX_CHUNK):
            self.do(cmd(AddRecipients, contacts=everyone[i : i + MAX_CHUNK]))

    @property
    def s(self) -> MessageState:
        assert self.state is not None
        return self.state

    def fold(self, events: list[Event]) -> list[Event]:
        for event in events:
            self.state = evolve(self.state, event)
            self.contacts.observe(event, self.state)
        self.log.extend(events)
        return events

    def contact(self, contact_id: str) -> Contact:
        """The contact's data as last added (what its mail is made of)."""
        return self.contacts.read(self.s.message_id, self.s.book, [contact_id])[0]

    def do(
        self, command: Command, now: datetime | None = None, actor: Actor = OPERATOR
    ) -> list[Event]:
        """Decide a command (at ``now``, default: the last tick's time) and fold its events."""
        if now is not None:
            self.now = now
        context = Context(now=self.now, actor=actor, default_time_zone=self.zone)
        if isinstance(command, CopyMessage):
            context = copy_context(context, self.state, self.contacts)
        events = decide(command, self.state, context)
        mine = events[0].message_id if self.state is None and events else None
        if self.state is not None:
            mine = self.state.message_id
        return self.fold([e for e in events if e.message_id == mine])

    def tick(self, at: datetime) -> list[Event]:
        """Plan the tick at ``at`` and fold what it says."""
        self.now = at
        events = self.fold(plan(self.s, Tick(tick_id=new_id(), at=at)))
        self.releases.extend((at, cid) for cid in released_ids(events))
        return events

    def run(
        self, until: datetime, step: timedelta = timedelta(seconds=1), deliver: bool = True
    ) -> None:
        """Tick every ``step`` up to ``until``, delivering released recipients as they go."""
        at = self.now
        while at <= until:
            self.tick(at)
            if deliver:
                self.deliver()
            at += step

    def deliver(self, *ids: str) -> list[Event]:
        """Record delivery of ``ids`` (default: everyone waiting for an outcome)."""
        waiting = list(ids) or self.s.book.ids_with([RecipientStatus.RELEASED])
        if not waiting:
            return []
        return self.do(cmd(RecordDeliveryOutcomes, delivered=tuple(waiting)), actor=DELIVERY)

    def give_back(self, *ids: str, release: int | None = None) -> list[Event]:
        """Report ``ids`` returned by delivery (not handed to SMTP), for their latest release
        (or for ``release``, to report a stale one)."""
        book = self.s.book
        returned = tuple(
            ReturnedSend(
                contact_id=cid,
                release=release if release is not None else book.released_in_of(cid) or 1,
            )
            for cid in ids
        )
        return self.do(cmd(RecordDeliveryOutcomes, returned=returned), actor=DELIVERY)

    @property
    def released(self) -> list[str]:
        return [cid for _, cid in self.releases]

    def released_at(self, cid: str) -> datetime:
        return next(at for at, c in self.releases if c == cid)

    @property
    def status(self) -> MessageStatus:
        return self.s.status


def raises_validation(fn: Any, *args: Any, **kwargs: Any) -> ValidationError:
    """Calling ``fn`` fails schema validation (a 422 at the edge)."""
    with pytest.raises(ValidationError) as info:
        fn(*args, **kwargs)
    return info.value
