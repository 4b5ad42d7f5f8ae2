"""The messages view's row has one list of columns (issue 13 item 4): the fields of
:class:`MessageRow`. What the store writes, what the reader selects and what the read API shows
are derived from it or checked against it here (the table: tests/integration/test_postgres.py).
"""

from __future__ import annotations

from dataclasses import fields

from bench.harness.histories import T0, Simulator, contacts
from schemas import DeliveryPlan, Throttle
from services.commands.read_api import MessageView
from services.projections.views import (
    ACTOR_COLUMNS,
    MESSAGE_COLUMNS,
    MessageRow,
    Projector,
    message_row,
)


def test_the_columns_are_the_fields_of_the_row_in_order() -> None:
    assert tuple(f.name for f in fields(MessageRow)) == MESSAGE_COLUMNS
    assert set(ACTOR_COLUMNS) <= set(MESSAGE_COLUMNS)


def test_a_folded_message_writes_one_value_per_column_under_its_name() -> None:
    sim = Simulator()
    message = sim.create(plan=DeliveryPlan(throttle=Throttle(batch_size=2, interval_seconds=60)))
    sim.add(message, contacts(3))
    sim.send_now(message)
    sim.tick()
    projector = Projector()
    for event in sim.events:
        projector.apply(event)
    state = projector.states[message]

    values = message_row(state, T0)
    row = dict(zip(MESSAGE_COLUMNS, values, strict=True))

    assert row["message_id"] == message
    assert row["status"] == state.status.value
    assert row["audience"] == 3
    assert (row["throttle_batch_size"], row["throttle_interval_seconds"]) == (2, 60)
    assert row["last_sequence"] == state.version
    assert row["updated_at"] == T0


def test_the_read_api_shows_every_column_but_the_account_and_adds_the_computed_fields() -> None:
    # The read API's MessageView is built from a row selected by MESSAGE_COLUMNS
    # (read_api.message_view): a column missing there, or one it expects that the row lacks,
    # fails here rather than as a 500 on a live read.
    shown = set(MessageView.model_fields)

    # Two fields are computed at read time, not stored: the remaining count and the zones a
    # resume now would skip (they depend on the read's clock).
    assert shown == (set(MESSAGE_COLUMNS) - {"account_id"}) | {"remaining", "zones_to_skip"}
