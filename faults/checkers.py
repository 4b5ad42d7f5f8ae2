"""The checkers of the fault matrix: pure functions over what a run left behind (what the SMTP
sink received, the delivery ledger, the message's events, the view comparison, the marker read
back after the run). Each returns the list of its violations, empty when the promise held; no
I/O, so each is proven to fire by tests that hand it a duplicate, a loss, a release while
paused, a view difference or a hanging transaction on purpose (tests/faults/test_checkers.py).

"Never twice, never lost" (docs/reliability.md):
- no_duplicates: no Message-ID and no contact twice at the sink; no contact twice in the
  ledger; no contact released again while its release is out (only a returned send is released
  again, after a resume).
- no_loss: every contact of the audience is in exactly one final state, the ledger accounts for
  every mail at the sink (delivered or unknown), delivered in the ledger means at the sink, and
  the message's own counts add up to the audience.
- views_equal_rebuild: the live views equal a rebuild from the log.
- no_hanging_transaction: a read_committed consumer saw a marker written after the run (an open
  transaction on a partition holds back its last stable offset, so the marker stays invisible).
- nothing_released_while_paused: no release between a pause and its resume, none after cancel.
- core_replay: the message's events equal those the pure core decides when it is run again on
  the same history (every record of the commands topic's partition, in log order:
  services.dispatcher.decider.decide_record), for the rows whose commands race the send.
- dead_letters: every bad record injected during a send was set aside with its error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from core import MessageStatus, RecipientStatus
from schemas import (
    Event,
    MessageCanceled,
    MessagePaused,
    MessageResumed,
    RecipientsReleased,
    RecipientsReturned,
)

#: The ledger states a contact of a finished send may be in: the send went out (delivered), was
#: refused for good (failed), or was claimed by a worker that died before it knew (unknown:
#: never sent again, docs/delivery.md).
FINAL_LEDGER_STATES = frozenset({"delivered", "failed", "unknown"})
#: The recipient statuses that end a contact's part in a send.
FINAL_STATUSES = frozenset(
    {
        RecipientStatus.DELIVERED,
        RecipientStatus.FAILED,
        RecipientStatus.SKIPPED,
        RecipientStatus.REMOVED,
        RecipientStatus.EXCLUDED,
        RecipientStatus.UNKNOWN,
    }
)


@dataclass(frozen=True)
class Mail:
    """One mail the sink received: its Message-ID header and the contact it went to."""

    message_id: str | None
    contact_id: str


@dataclass(frozen=True)
class Observation:
    """What one run of a scenario left behind for one message."""

    audience: frozenset[str]
    mails: Sequence[Mail]
    #: (contact id, ledger state) of every ledger row of the message (a list: a checker must see
    #: a second row of a contact, which a mapping would hide).
    ledger: Sequence[tuple[str, str]]
    events: Sequence[Event]
    #: The message's own counts by recipient status (core's fold of the events).
    counts: Mapping[RecipientStatus, int] = field(default_factory=dict)
    status: MessageStatus | None = None
    #: Contacts of the audience the message's own state says are not to be sent (removed,
    #: excluded or skipped by the core): neither lost nor expected in the ledger.
    unsent: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Verdict:
    duplicates: int
    lost: int
    unknown: int
    violations: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.violations


def _twice(values: Iterable[str | None]) -> list[str]:
    return sorted(str(v) for v, n in Counter(values).items() if n > 1)


def released(events: Iterable[Event]) -> list[str]:
    return [c for e in events if isinstance(e, RecipientsReleased) for c in e.contact_ids]


def released_again(events: Iterable[Event]) -> list[str]:
    """Contacts released while a release of theirs was still out: a second release is right
    only after delivery returned the first (RecipientsReturned: paused or canceled before the
    hand-off to SMTP, docs/delivery.md "The fence")."""
    out: set[str] = set()
    again: list[str] = []
    for event in events:
        if isinstance(event, RecipientsReleased):
            for contact in event.contact_ids:
                if contact in out:
                    again.append(contact)
                out.add(contact)
        elif isinstance(event, RecipientsReturned):
            out.difference_update(event.contact_ids)
    return sorted(set(again))


def duplicates(obs: Observation) -> list[str]:
    """Every way a contact could have got, or been handed out for, a second copy."""
    found: list[str] = []
    ids = [m.message_id for m in obs.mails if m.message_id is not None]
    if twice := _twice(ids):
        found.append(f"{len(twice)} Message-IDs arrived twice at the sink, e.g. {twice[:3]}")
    if twice := _twice(m.contact_id for m in obs.mails):
        found.append(f"{len(twice)} contacts got two mails at the sink, e.g. {twice[:3]}")
    if twice := _twice(c for c, _ in obs.ledger):
        found.append(f"{len(twice)} contacts have two ledger rows, e.g. {twice[:3]}")
    if twice := released_again(obs.events):
        found.append(f"{len(twice)} contacts were released twice, e.g. {twice[:3]}")
    return found


def duplicate_count(obs: Observation) -> int:
    """Mails beyond the first per contact at the sink (the figure of the matrix's rows)."""
    return sum(n - 1 for n in Counter(m.contact_id for m in obs.mails).values())


def losses(obs: Observation) -> list[str]:
    """Every contact not accounted for in exactly one final state, and counts that do not add
    up. Only for a finished message (sent or canceled): a running one has pending contacts."""
    found: list[str] = []
    ledger = dict(obs.ledger)
    at_sink = {m.contact_id for m in obs.mails}
    released_ids = set(released(obs.events))
    if missing := sorted(released_ids - set(ledger)):
        found.append(f"{len(missing)} released contacts have no ledger row, e.g. {missing[:3]}")

    # A send returned by the fence is final only when it is not to be sent again: its message
    # was canceled, or its contact removed (or excluded) since. Otherwise a resume releases the
    # contact again and the same row is claimed again.
    def is_final(contact: str, state: str) -> bool:
        if state == "returned":
            return obs.status is MessageStatus.CANCELED or contact in obs.unsent
        return state in FINAL_LEDGER_STATES

    if open_rows := sorted(c for c, s in ledger.items() if not is_final(c, s)):
        found.append(f"{len(open_rows)} ledger rows are not final, e.g. {open_rows[:3]}")
    delivered = {c for c, s in ledger.items() if s == "delivered"}
    unknown = {c for c, s in ledger.items() if s == "unknown"}
    if ghost := sorted(delivered - at_sink):
        found.append(f"{len(ghost)} contacts delivered in the ledger, not at the sink: {ghost[:3]}")
    if stray := sorted(at_sink - delivered - unknown):
        found.append(f"{len(stray)} mails at the sink the ledger cannot account for: {stray[:3]}")
    if outside := sorted(at_sink - obs.audience):
        found.append(f"{len(outside)} mails to contacts outside the audience: {outside[:3]}")
    if obs.counts:
        final = sum(n for s, n in obs.counts.items() if s in FINAL_STATUSES)
        if obs.status is MessageStatus.SENT and final != len(obs.audience):
            found.append(f"the final counts add up to {final}, the audience is {len(obs.audience)}")
        for status, rows in (
            (RecipientStatus.DELIVERED, delivered),
            (RecipientStatus.UNKNOWN, unknown),
        ):
            if obs.counts.get(status, 0) != len(rows):
                found.append(
                    f"the message counts {obs.counts.get(status, 0)} {status.value},"
                    f" the ledger {len(rows)}"
                )
    if obs.status is MessageStatus.SENT and (
        lost := sorted(obs.audience - obs.unsent - set(ledger))
    ):
        found.append(f"{len(lost)} contacts of a sent message were never sent, e.g. {lost[:3]}")
    return found


def lost_count(obs: Observation) -> int:
    """Released contacts with no ledger row, plus, for a sent message, audience contacts with no
    ledger row (the figure of the matrix's rows)."""
    ledger = {c for c, _ in obs.ledger}
    lost = set(released(obs.events)) - ledger
    if obs.status is MessageStatus.SENT:
        lost |= obs.audience - obs.unsent - ledger
    return len(lost)


def releases_while_paused(events: Sequence[Event]) -> list[str]:
    """No RecipientsReleased between a MessagePaused and the next MessageResumed, and none after
    a MessageCanceled (the events of one message, in log order)."""
    found: list[str] = []
    paused = canceled = False
    for event in events:
        if isinstance(event, MessagePaused):
            paused = True
        elif isinstance(event, MessageResumed):
            paused = False
        elif isinstance(event, MessageCanceled):
            canceled = True
        elif isinstance(event, RecipientsReleased) and (paused or canceled):
            when = "after cancel" if canceled else "while paused"
            found.append(
                f"{len(event.contact_ids)} contacts released {when} (sequence {event.sequence})"
            )
    return found


def view_differences(equal: bool, differences: Sequence[Mapping[str, object]]) -> list[str]:
    """The comparison of services.projections.audit.compare: the live views equal a rebuild."""
    if equal and not differences:
        return []
    return [
        f"view {d.get('table')}: {d.get('only_live')} rows only live,"
        f" {d.get('only_rebuilt')} only rebuilt"
        for d in differences
    ] or ["the views differ from a rebuild"]


def hanging_transactions(marker_seen: Mapping[int, bool]) -> list[str]:
    """Per partition, whether a read_committed consumer saw the marker written after the run."""
    return [
        f"partition {p}: a transaction is still open (the marker after the run is invisible)"
        for p, seen in sorted(marker_seen.items())
        if not seen
    ]


def core_replay(live: Sequence[Event], replayed: Sequence[Event] | None) -> list[str]:
    """The message's events as the log holds them against the pure core's decisions on the
    same history (None: no replay for this row). Events compare whole (ids, instants, payload)."""
    if replayed is None:
        return []
    found: list[str] = []
    for i, (a, b) in enumerate(zip(live, replayed, strict=False)):
        if a != b:
            found.append(
                f"event {i + 1} differs from the core's replay: live {a.type} (sequence"
                f" {a.sequence}), replayed {b.type} (sequence {b.sequence})"
            )
            break
    if len(live) != len(replayed):
        found.append(f"{len(live)} events in the log, {len(replayed)} in the core's replay")
    return found


def dead_letters(expected: Iterable[str], found: Iterable[str]) -> list[str]:
    """Every injected bad record (named by a tag it carries) is among those set aside."""
    missing = sorted(set(expected) - set(found))
    return [f"bad record {m} was not dead-lettered" for m in missing]


def judge(
    obs: Observation,
    *,
    views_equal: bool = True,
    view_diffs: Sequence[Mapping[str, object]] = (),
    marker_seen: Mapping[int, bool] | None = None,
    replayed: Sequence[Event] | None = None,
    extra: Sequence[str] = (),
) -> Verdict:
    """Every checker on one run; ``extra``: violations a row's own checks found (dead letters,
    another account's view, a zombie's writes)."""
    violations = [
        *duplicates(obs),
        *losses(obs),
        *releases_while_paused(obs.events),
        *view_differences(views_equal, view_diffs),
        *hanging_transactions(marker_seen or {}),
        *core_replay(obs.events, replayed),
        *extra,
    ]
    unknown = sum(1 for _, s in obs.ledger if s == "unknown")
    return Verdict(duplicate_count(obs), lost_count(obs), unknown, tuple(violations))
