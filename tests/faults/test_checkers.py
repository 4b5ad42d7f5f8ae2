"""The fault matrix's checkers fire: each is handed a run with a duplicate, a loss, a release
while paused, a view difference or a hanging transaction injected on purpose, and a clean run
passes them all (faults/checkers.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from core import MessageStatus, RecipientStatus
from faults.checkers import Mail, Observation, dead_letters, judge
from schemas import (
    Actor,
    Event,
    MessageCanceled,
    MessagePaused,
    MessageResumed,
    RecipientsReleased,
    RecipientsReturned,
)

MESSAGE = uuid.uuid4()
ACTOR = Actor(kind="user", account_id="acct-a", user_id="ada")
AUDIENCE = frozenset(f"c{i}" for i in range(6))


def envelope(sequence: int) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4(),
        "message_id": MESSAGE,
        "sequence": sequence,
        "occurred_at": datetime(2026, 12, 1, tzinfo=UTC),
        "correlation_id": uuid.uuid4(),
        "causation_id": uuid.uuid4(),
        "actor": ACTOR,
    }


def release(sequence: int, *contacts: str) -> RecipientsReleased:
    return RecipientsReleased(contact_ids=contacts, **envelope(sequence))


def clean_run(**changes: Any) -> Observation:
    """Six contacts released in two batches, all delivered, one mail each."""
    fields: dict[str, Any] = {
        "audience": AUDIENCE,
        "mails": [Mail(f"<{c}@m>", c) for c in sorted(AUDIENCE)],
        "ledger": [(c, "delivered") for c in sorted(AUDIENCE)],
        "events": [release(1, "c0", "c1", "c2"), release(2, "c3", "c4", "c5")],
        "counts": {RecipientStatus.DELIVERED: 6},
        "status": MessageStatus.SENT,
    }
    fields.update(changes)
    return Observation(**fields)


def test_a_clean_run_passes_every_checker() -> None:
    verdict = judge(clean_run(), marker_seen={0: True, 1: True})
    assert verdict.passed, verdict.violations
    assert (verdict.duplicates, verdict.lost, verdict.unknown) == (0, 0, 0)


def test_a_second_mail_at_the_sink_is_a_duplicate() -> None:
    run = clean_run()
    verdict = judge(clean_run(mails=[*run.mails, Mail("<c3-again@m>", "c3")]))
    assert not verdict.passed
    assert verdict.duplicates == 1
    assert any("two mails at the sink" in v for v in verdict.violations)


def test_a_message_id_twice_at_the_sink_is_a_duplicate() -> None:
    run = clean_run()
    verdict = judge(clean_run(mails=[*run.mails, Mail("<c3@m>", "c3")]))
    assert any("Message-IDs arrived twice" in v for v in verdict.violations)


def test_a_second_ledger_row_of_a_contact_is_a_duplicate() -> None:
    run = clean_run()
    verdict = judge(clean_run(ledger=[*run.ledger, ("c2", "unknown")]))
    assert any("two ledger rows" in v for v in verdict.violations)


def test_a_contact_released_twice_is_a_duplicate() -> None:
    run = clean_run()
    verdict = judge(clean_run(events=[*run.events, release(3, "c4")]))
    assert any("released twice" in v for v in verdict.violations)


def test_a_contact_without_a_ledger_row_is_lost() -> None:
    run = clean_run()
    verdict = judge(
        clean_run(
            mails=[m for m in run.mails if m.contact_id != "c5"],
            ledger=[r for r in run.ledger if r[0] != "c5"],
            counts={RecipientStatus.DELIVERED: 5},
        )
    )
    assert not verdict.passed
    assert verdict.lost == 1
    assert any("no ledger row" in v for v in verdict.violations)


def test_delivered_in_the_ledger_but_missing_at_the_sink_is_a_loss() -> None:
    run = clean_run()
    verdict = judge(clean_run(mails=[m for m in run.mails if m.contact_id != "c0"]))
    assert any("not at the sink" in v for v in verdict.violations)


def test_a_mail_the_ledger_cannot_account_for_is_caught() -> None:
    run = clean_run()
    ledger = [(c, "failed" if c == "c1" else s) for c, s in run.ledger]
    counts = {RecipientStatus.DELIVERED: 5, RecipientStatus.FAILED: 1}
    verdict = judge(clean_run(ledger=ledger, counts=counts))
    assert any("cannot account for" in v for v in verdict.violations)


def test_counts_that_do_not_add_up_are_caught() -> None:
    verdict = judge(clean_run(counts={RecipientStatus.DELIVERED: 5}))
    assert any("add up to 5" in v for v in verdict.violations)
    assert any("counts 5 delivered, the ledger 6" in v for v in verdict.violations)


def test_a_ledger_row_left_claimed_is_not_final() -> None:
    run = clean_run()
    ledger = [(c, "claimed" if c == "c2" else s) for c, s in run.ledger]
    verdict = judge(clean_run(ledger=ledger))
    assert any("not final" in v for v in verdict.violations)


def test_unknown_sends_count_as_accounted_for_and_are_reported() -> None:
    run = clean_run()
    ledger = [(c, "unknown" if c == "c2" else s) for c, s in run.ledger]
    counts = {RecipientStatus.DELIVERED: 5, RecipientStatus.UNKNOWN: 1}
    verdict = judge(clean_run(ledger=ledger, counts=counts))
    assert verdict.passed, verdict.violations
    assert verdict.unknown == 1


def test_a_release_while_paused_is_caught_and_one_after_resume_is_not() -> None:
    events: list[Event] = [
        release(1, "c0", "c1", "c2"),
        MessagePaused(**envelope(2)),
        MessageResumed(**envelope(3)),
        release(4, "c3", "c4", "c5"),
    ]
    assert judge(clean_run(events=events)).passed
    events = [events[0], events[1], events[3], events[2]]
    verdict = judge(clean_run(events=events))
    assert any("released while paused" in v for v in verdict.violations)


def test_a_release_after_cancel_is_caught() -> None:
    events: list[Event] = [
        release(1, "c0", "c1", "c2"),
        MessageCanceled(**envelope(2)),
        release(3, "c3", "c4", "c5"),
    ]
    verdict = judge(clean_run(events=events))
    assert any("released after cancel" in v for v in verdict.violations)


def test_a_view_difference_is_caught() -> None:
    diff = {"table": "view_messages", "only_live": 1, "only_rebuilt": 0}
    verdict = judge(clean_run(), views_equal=False, view_diffs=[diff])
    assert verdict.violations == ("view view_messages: 1 rows only live, 0 only rebuilt",)


def test_a_hanging_transaction_is_caught() -> None:
    verdict = judge(clean_run(), marker_seen={0: True, 1: False})
    assert verdict.violations == (
        "partition 1: a transaction is still open (the marker after the run is invisible)",
    )


def test_a_history_that_differs_from_the_core_replay_fails() -> None:
    run = clean_run()
    assert judge(run, replayed=list(run.events)).passed
    missing = judge(run, replayed=list(run.events)[:1])
    assert not missing.passed
    assert any("in the core's replay" in v for v in missing.violations)
    other = judge(run, replayed=[run.events[0], release(2, "c3", "c4")])
    assert not other.passed
    assert any("differs from the core's replay" in v for v in other.violations)


def test_a_bad_record_not_dead_lettered_fails() -> None:
    assert judge(clean_run(), extra=dead_letters(["a", "b"], ["a", "b", "x"])).passed
    verdict = judge(clean_run(), extra=dead_letters(["a", "b"], ["a"]))
    assert verdict.violations == ("bad record b was not dead-lettered",)


def test_a_contact_the_core_removed_is_not_lost_but_one_it_did_not_is() -> None:
    removed = clean_run(
        audience=AUDIENCE | {"c6"},
        counts={RecipientStatus.DELIVERED: 6, RecipientStatus.REMOVED: 1},
    )
    assert not judge(removed).passed  # c6 never sent and not known to be removed: lost
    assert judge(removed).lost == 1
    verdict = judge(
        clean_run(
            audience=AUDIENCE | {"c6"},
            counts={RecipientStatus.DELIVERED: 6, RecipientStatus.REMOVED: 1},
            unsent=frozenset({"c6"}),
        )
    )
    assert verdict.passed, verdict.violations


def returned(sequence: int, *contacts: str) -> RecipientsReturned:
    return RecipientsReturned(contact_ids=contacts, **envelope(sequence))


def test_a_contact_released_again_after_its_send_was_returned_is_no_duplicate() -> None:
    events = [release(1, "c0", "c1", "c2"), returned(2, "c2"), release(3, "c2", "c3", "c4", "c5")]
    assert judge(clean_run(events=events)).passed
    # Without the return in between, the second release of c2 is a duplicate.
    again = [release(1, "c0", "c1", "c2"), release(2, "c2", "c3", "c4", "c5")]
    verdict = judge(clean_run(events=again))
    assert verdict.violations == ("1 contacts were released twice, e.g. ['c2']",)


def test_a_returned_send_is_final_only_for_a_canceled_message() -> None:
    ledger = [(c, "returned" if c == "c5" else "delivered") for c in sorted(AUDIENCE)]
    mails = [Mail(f"<{c}@m>", c) for c in sorted(AUDIENCE - {"c5"})]
    events = [release(1, "c0", "c1", "c2"), release(2, "c3", "c4", "c5"), returned(3, "c5")]
    canceled = clean_run(
        ledger=ledger,
        mails=mails,
        events=[*events, MessageCanceled(**envelope(4))],
        counts={RecipientStatus.DELIVERED: 5},
        status=MessageStatus.CANCELED,
    )
    assert judge(canceled).passed, judge(canceled).violations
    sent = clean_run(ledger=ledger, mails=mails, events=events)
    assert any("not final" in v for v in judge(sent).violations)


def test_a_returned_send_of_a_contact_removed_since_is_final() -> None:
    ledger = [(c, "returned" if c == "c5" else "delivered") for c in sorted(AUDIENCE)]
    mails = [Mail(f"<{c}@m>", c) for c in sorted(AUDIENCE - {"c5"})]
    events = [release(1, "c0", "c1", "c2"), release(2, "c3", "c4", "c5"), returned(3, "c5")]
    counts = {RecipientStatus.DELIVERED: 5, RecipientStatus.REMOVED: 1}
    removed = clean_run(ledger=ledger, mails=mails, events=events, counts=counts)
    assert any("not final" in v for v in judge(removed).violations)  # c5 not known removed
    verdict = judge(
        clean_run(
            ledger=ledger, mails=mails, events=events, counts=counts, unsent=frozenset({"c5"})
        )
    )
    assert verdict.passed, verdict.violations
