"""What each event does to the views (spec, "What the views show"), through the pure view function
and the in-memory tables of tests/projections/tables.py. Histories are decided by the real core
(tests/histories.py), so each one is a history the processor could have written."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from uuid import UUID

import pytest

from bench.harness.histories import (
    CONTENT,
    DELIVERY,
    OPERATOR,
    T0,
    Simulator,
    contacts,
    sends_history,
)
from core import EventOutOfOrderError, RecipientStatus, fold
from schemas import (
    CancelMessage,
    Contact,
    CopyMessage,
    DeliveryPlan,
    EditDraft,
    Event,
    PauseMessage,
    RecipientsAdded,
    RecipientsReleased,
    RemoveRecipients,
    ResumeMessage,
    ScheduleMessage,
    Throttle,
    UnscheduleMessage,
)
from services.projections.views import LISTS, Batch, Projector
from tests.projections.tables import Tables, project


def sending(n: int = 4, plan: DeliveryPlan | None = None) -> tuple[Simulator, UUID]:
    sim = Simulator()
    message = sim.create(plan=plan)
    sim.add(message, contacts(n))
    sim.send_now(message)
    return sim, message


def release_all(sim: Simulator) -> list[str]:
    released: list[str] = []
    for _ in range(20):
        released += [
            c for e in sim.tick() if isinstance(e, RecipientsReleased) for c in e.contact_ids
        ]
    return released


def states(tables: Tables, message: UUID) -> dict[str, str]:
    return {cid: row["state"] for (m, cid), row in tables.recipients.items() if m == message}


def test_a_draft_shows_in_drafts_with_its_content_and_a_history_row_naming_its_author() -> None:
    sim = Simulator()
    message = sim.create()

    tables = project(sim.events)

    row = tables.messages[message]
    assert row["status"] in LISTS["drafts"]
    assert (row["name"], row["subject"], row["from_address"]) == (
        CONTENT.name,
        CONTENT.subject,
        CONTENT.from_address,
    )
    assert json.loads(row["created_by"]) == {
        "kind": "user",
        "account_id": "acct-a",
        "user_id": "ada",
    }
    [history] = tables.history.values()
    assert history[3] == "DraftCreated"
    assert history[5:9] == ("user", "acct-a", "ada", None)


def test_an_edit_changes_the_drafts_row() -> None:
    sim = Simulator()
    message = sim.create()
    sim.run(
        EditDraft(
            command_id=sim.new_id(),
            message_id=message,
            content=CONTENT.model_copy(update={"name": "Renamed"}),
        )
    )

    tables = project(sim.events)

    assert tables.messages[message]["name"] == "Renamed"
    assert tables.messages[message]["last_sequence"] == 2


def test_added_recipients_are_pending_and_count_in_the_audience() -> None:
    sim = Simulator()
    message = sim.create()
    sim.add(message, contacts(3))

    tables = project(sim.events)

    assert states(tables, message) == {"c0": "pending", "c1": "pending", "c2": "pending"}
    row = tables.recipients[(message, "c1")]
    assert row["email"] == "c1@example.org" and row["added_at"] == T0
    assert tables.messages[message]["audience"] == 3
    assert tables.messages[message]["pending"] == 3
    [_, added] = tables.history.values()
    assert json.loads(added[-1]) == {"contacts_count": 3, "report": {"added": 3}}


def test_a_pending_contact_updated_by_an_add_shows_its_new_address() -> None:
    sim = Simulator()
    message = sim.create()
    sim.add(message, contacts(2))
    moved = Contact(contact_id="c1", email="moved@example.org", attributes={"n": 1})
    sim.add(message, [moved])

    tables = project(sim.events)

    row = tables.recipients[(message, "c1")]
    assert row["email"] == "moved@example.org" and row["state"] == "pending"
    assert tables.messages[message]["audience"] == 2
    assert json.loads(list(tables.history.values())[-1][-1]) == {
        "contacts_count": 1,
        "report": {"updated": 1},
    }


def test_scheduled_shows_send_time_mode_throttle_and_audience() -> None:
    sim = Simulator()
    end = T0 + timedelta(days=2)
    plan = DeliveryPlan(throttle=Throttle(batch_size=2, interval_seconds=3600, end_at=end))
    message = sim.create(plan=plan)
    sim.add(message, contacts(5))
    send_at = T0 + timedelta(hours=1)
    sim.run(ScheduleMessage(command_id=sim.new_id(), message_id=message, send_at=send_at))

    row = project(sim.events).messages[message]

    assert row["status"] in LISTS["scheduled"]
    assert (row["send_at"], row["mode"], row["audience"]) == (send_at, "fixed", 5)
    assert (row["throttle_batch_size"], row["throttle_interval_seconds"], row["end_at"]) == (
        2,
        3600,
        end,
    )
    assert row["next_batch_at"] == send_at


def test_unscheduled_goes_back_to_drafts() -> None:
    sim = Simulator()
    message = sim.create()
    sim.run(
        ScheduleMessage(
            command_id=sim.new_id(), message_id=message, send_at=T0 + timedelta(hours=1)
        )
    )
    sim.run(UnscheduleMessage(command_id=sim.new_id(), message_id=message))

    row = project(sim.events).messages[message]

    assert row["status"] == "draft" and row["send_at"] is None


def test_releases_and_outcomes_set_states_reasons_timestamps_and_counts() -> None:
    sim, message = sending(4)
    released = release_all(sim)
    assert sorted(released) == ["c0", "c1", "c2", "c3"]
    released_at = sim.now
    sim.now += timedelta(seconds=5)
    sim.deliver(message, delivered=("c0", "c1"), failed=(("c2", "550 no such user"),))
    sim.deliver(message, unknown=("c3",))
    sim.tick()  # the planner sees nobody left: sent

    tables = project(sim.events)

    assert states(tables, message) == {
        "c0": "delivered",
        "c1": "delivered",
        "c2": "failed",
        "c3": "unknown",
    }
    c2 = tables.recipients[(message, "c2")]
    assert c2["reason"] == "550 no such user"
    assert c2["released_at"] <= released_at < c2["state_at"]
    row = tables.messages[message]
    assert row["status"] == "sent" and row["status"] in LISTS["sent"]
    assert (row["delivered"], row["failed"], row["unknown"], row["pending"]) == (2, 1, 1, 0)
    actors = {h[3]: h[5:9] for h in tables.history.values()}
    assert actors["RecipientsDelivered"] == ("service", "acct-a", None, "delivery")
    assert actors["RecipientsReleased"] == ("service", "acct-a", None, "dispatcher")


def test_pause_shows_since_when_and_by_whom_and_resume_clears_it() -> None:
    sim, message = sending(3, DeliveryPlan(release_rate=1))
    sim.tick()
    sim.tick()
    sim.run(PauseMessage(command_id=sim.new_id(), message_id=message, reason="typo"))
    paused_at = sim.now

    paused = project(sim.events).messages[message]

    assert paused["status"] == "paused" and paused["paused_at"] == paused_at
    assert json.loads(paused["paused_by"])["user_id"] == "ada"
    assert paused["pause_reason"] == "typo"
    sim.now += timedelta(minutes=1)
    sim.run(ResumeMessage(command_id=sim.new_id(), message_id=message))
    resumed = project(sim.events).messages[message]
    assert resumed["status"] == "sending" and resumed["paused_at"] is None


def test_cancel_shows_canceled_at_and_leaves_the_rest_pending() -> None:
    sim, message = sending(3, DeliveryPlan(release_rate=1))
    sim.tick()  # starts, and releases one recipient
    sim.run(CancelMessage(command_id=sim.new_id(), message_id=message))

    tables = project(sim.events)

    row = tables.messages[message]
    assert row["status"] == "canceled" and row["canceled_at"] == sim.now
    assert sorted(states(tables, message).values()) == ["pending", "pending", "released"]
    assert row["pending"] == 2 and row["released"] == 1


def test_returned_sends_show_pending_again_while_paused_and_not_sent_after_a_cancel() -> None:
    sim, message = sending(4, DeliveryPlan(release_rate=2))
    released = [c for e in sim.tick() if isinstance(e, RecipientsReleased) for c in e.contact_ids]
    assert released == ["c0", "c1"]
    release = next(e.sequence for e in sim.events if isinstance(e, RecipientsReleased))
    sim.run(PauseMessage(command_id=sim.new_id(), message_id=message))
    assert states(project(sim.events), message)["c1"] == "released"
    sim.deliver(message, delivered=("c0",), returned=(("c1", release),))

    tables = project(sim.events)
    assert states(tables, message) == {
        "c0": "delivered",
        "c1": "pending",
        "c2": "pending",
        "c3": "pending",
    }
    row = tables.messages[message]
    assert (row["delivered"], row["released"], row["pending"]) == (1, 0, 3)

    sim.now += timedelta(minutes=1)
    sim.run(ResumeMessage(command_id=sim.new_id(), message_id=message))
    again = [c for e in sim.tick() if isinstance(e, RecipientsReleased) for c in e.contact_ids]
    assert again == ["c1", "c2"]  # the returned one first
    second = max(e.sequence for e in sim.events if isinstance(e, RecipientsReleased))
    sim.run(CancelMessage(command_id=sim.new_id(), message_id=message))
    sim.deliver(message, returned=(("c1", second), ("c2", second)))

    tables = project(sim.events)
    row = tables.messages[message]
    assert row["status"] == "canceled"
    assert (row["delivered"], row["released"], row["pending"]) == (1, 0, 3)
    # Pending in a canceled message: "not sent, canceled" (the read API's reason).
    assert states(tables, message)["c1"] == "pending"


def test_removed_contacts_show_removed_and_come_back_pending_when_added_again() -> None:
    sim = Simulator()
    message = sim.create()
    sim.add(message, contacts(2))
    sim.run(RemoveRecipients(command_id=sim.new_id(), message_id=message, contact_ids=("c1",)))

    removed = project(sim.events)
    assert states(removed, message) == {"c0": "pending", "c1": "removed"}
    assert removed.messages[message]["audience"] == 1

    sim.now += timedelta(seconds=3)
    sim.add(message, [Contact(contact_id="c1", email="new@example.org")])
    for cuts in (None, [len(sim.events) - 2], []):
        again = project(sim.events, cuts)
        assert states(again, message) == {"c0": "pending", "c1": "pending"}
        c1 = again.recipients[(message, "c1")]
        assert c1["email"] == "new@example.org" and c1["added_at"] == sim.now


def test_a_copy_excluding_delivered_shows_them_excluded_and_is_a_draft() -> None:
    sim, message = sending(3)
    release_all(sim)
    sim.deliver(message, delivered=("c0",), failed=(("c1", "550"),), unknown=("c2",))
    copy_id = sim.new_id("message")
    sim.run(
        CopyMessage(
            command_id=sim.new_id(),
            message_id=message,
            new_message_id=copy_id,
            exclude_delivered=True,
        )
    )

    tables = project(sim.events)

    assert tables.messages[copy_id]["status"] == "draft"
    assert tables.messages[copy_id]["copied_from"] == message
    # Who may have received it is excluded; a permanent failure never did.
    assert states(tables, copy_id) == {"c0": "excluded", "c1": "pending", "c2": "excluded"}
    # Excluded recipients carry their reason, pending ones none.
    reasons = {c: r["reason"] for (m, c), r in tables.recipients.items() if m == copy_id}
    assert reasons == {
        "c0": "may_have_received_original",
        "c1": None,
        "c2": "may_have_received_original",
    }
    assert tables.messages[copy_id]["audience"] == 1
    assert "MessageCopied" in {h[3] for h in tables.history.values() if h[0] == message}


def test_skipped_recipients_carry_their_reason() -> None:
    sim = Simulator()
    message = sim.create()
    sim.add(
        message,
        [
            Contact(contact_id="a", email="same@example.org"),
            Contact(contact_id="b", email="SAME@example.org"),
        ],
    )
    sim.send_now(message)
    release_all(sim)

    tables = project(sim.events)

    assert states(tables, message) == {"a": "released", "b": "skipped"}
    assert tables.recipients[(message, "b")]["reason"] == "duplicate_address"
    assert tables.messages[message]["skipped"] == 1


def test_throttled_sending_shows_the_current_batch_and_the_next_batch_time() -> None:
    plan = DeliveryPlan(throttle=Throttle(batch_size=2, interval_seconds=60))
    sim, message = sending(5, plan)
    sim.tick()
    sim.tick()

    tables = project(sim.events)

    row = tables.messages[message]
    assert row["current_batch"] == 1  # numbered from 1 in the views
    send_at = row["send_at"]
    assert row["next_batch_at"] == send_at + timedelta(seconds=60)
    assert {r["batch"] for (m, _), r in tables.recipients.items() if r["state"] == "released"} == {
        1
    }

    sim.run(PauseMessage(command_id=sim.new_id(), message_id=message))
    paused = project(sim.events).messages[message]
    assert paused["status"] == "paused" and paused["next_batch_at"] is None


def test_recipient_timezone_shows_zones_pending_and_done() -> None:
    sim = Simulator()
    message = sim.create(plan=DeliveryPlan(mode="recipient_timezone"))
    sim.add(message, contacts(4, zones=("Asia/Tokyo", "America/New_York")))
    local = (T0 + timedelta(hours=2)).replace(tzinfo=None)
    sim.run(ScheduleMessage(command_id=sim.new_id(), message_id=message, send_at_local=local))
    for _ in range(3):
        sim.tick(timedelta(hours=1))

    row = project(sim.events).messages[message]

    # 11:00 in Tokyo came long ago on 15 January 2030 09:00 UTC: due at once; New York waits.
    assert row["status"] == "sending"
    assert row["zones_done"] == ["Asia/Tokyo"]
    assert row["zones_pending"] == ["America/New_York"]


def test_every_recipient_state_equals_the_cores_fold() -> None:
    events = list(sends_history(2, 300, rate=100, fail_every=7))

    tables = project(events)

    for message in {e.message_id for e in events}:
        state = fold(e for e in events if e.message_id == message)
        assert state is not None
        assert states(tables, message) == {
            cid: str(state.book.status_of(cid)) for cid in state.book.slots
        }
        assert tables.messages[message]["last_sequence"] == state.version


@pytest.mark.parametrize("seed", range(8))
def test_any_split_into_batches_writes_the_same_tables(seed: int) -> None:
    """Coalescing within a batch never changes the result: one event per batch, random batches
    and one batch for everything give equal tables (so a crash between batches, which changes
    where batches end, cannot change the views)."""
    sim, message = sending(30, DeliveryPlan(release_rate=7))
    rng = random.Random(seed)
    for step in range(12):
        for event in sim.tick():
            if isinstance(event, RecipientsReleased) and step % 3:
                ids = event.contact_ids
                sim.deliver(message, delivered=ids[:-1], failed=((ids[-1], "550"),))
        if step == 4:
            sim.run(
                RemoveRecipients(command_id=sim.new_id(), message_id=message, contact_ids=("c29",))
            )
            sim.add(message, [Contact(contact_id="c29", email="back@example.org")])
        if step == 6:
            sim.run(PauseMessage(command_id=sim.new_id(), message_id=message))
            sim.run(ResumeMessage(command_id=sim.new_id(), message_id=message), actor=DELIVERY)
    events = sim.events
    cuts = sorted(rng.sample(range(1, len(events)), k=min(6, len(events) - 1)))

    one_by_one = project(events)
    random_cuts = project(events, cuts)
    all_at_once = project(events, [])

    assert random_cuts == one_by_one == all_at_once


def test_an_event_out_of_order_is_refused_before_anything_changes() -> None:
    sim = Simulator()
    message = sim.create()
    sim.add(message, contacts(2))
    projector, batch = Projector(), Batch()
    projector.apply(sim.events[0], batch)
    before = len(batch)

    skipped: Event = sim.events[1].model_copy(update={"sequence": 5})
    with pytest.raises(EventOutOfOrderError):
        projector.apply(skipped, batch)

    assert len(batch) == before
    projector.apply(sim.events[1], batch)
    assert isinstance(sim.events[1], RecipientsAdded)
    assert projector.states[message].book.status_of("c0") is RecipientStatus.PENDING
    assert OPERATOR.account_id == projector.states[message].account_id


def test_grouped_updates_cover_exactly_the_updated_rows() -> None:
    """The store updates existing rows by groups of equal new values: the groups hold every
    updated row once, with that row's values."""
    sim, message = sending(40, DeliveryPlan(release_rate=9))
    projector, first = Projector(), Batch()
    for event in sim.events:
        projector.apply(event, first)
    start = len(sim.events)
    for _ in range(6):
        for event in sim.tick():
            if isinstance(event, RecipientsReleased):
                ids = event.contact_ids
                sim.deliver(message, delivered=ids[1:], failed=((ids[0], "550"),))
    second = Batch()
    for event in sim.events[start:]:
        projector.apply(event, second)

    rows = {(r[0], r[1]): (r[0], r[4], r[5], r[6], r[8], r[9], r[10]) for r in second.updates()}
    grouped = {(key[0], cid): key for key, ids in second.update_groups().items() for cid in ids}

    assert rows and grouped == rows
    assert sum(len(ids) for ids in second.update_groups().values()) == len(rows)
