"""The view tables in memory, with the same write rules as services/projections/store.py (insert
new rows, rewrite re-added ones, update state with released_at/batch kept): the fast tests check
the pure view function through them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from schemas import Event
from services.projections.views import (
    MESSAGE_COLUMNS,
    RECIPIENT_COLUMNS,
    Batch,
    Projector,
)

_R = {name: i for i, name in enumerate(RECIPIENT_COLUMNS)}


@dataclass
class Tables:
    messages: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    recipients: dict[tuple[UUID, str], dict[str, Any]] = field(default_factory=dict)
    history: dict[tuple[UUID, int], tuple[Any, ...]] = field(default_factory=dict)

    def write(self, batch: Batch, projector: Projector) -> None:
        for row in batch.history:
            assert (row[0], row[1]) not in self.history, "an event written twice"
            self.history[(row[0], row[1])] = row
        for row in batch.inserts():
            assert (row[0], row[1]) not in self.recipients, "COPY would hit an existing row"
            self.recipients[(row[0], row[1])] = dict(zip(RECIPIENT_COLUMNS, row, strict=True))
        for row in batch.rewrites():
            assert (row[0], row[1]) in self.recipients, "a rewrite of a missing row"
            self.recipients[(row[0], row[1])] = dict(zip(RECIPIENT_COLUMNS, row, strict=True))
        for row in batch.updates():
            old = self.recipients[(row[0], row[1])]
            for name in ("state", "reason", "state_at", "sequence"):
                old[name] = row[_R[name]]
            for name in ("released_at", "batch"):
                if row[_R[name]] is not None:
                    old[name] = row[_R[name]]
        for row in projector.message_rows(batch.messages):
            self.messages[row[0]] = dict(zip(MESSAGE_COLUMNS, row, strict=True))


def project(events: list[Event], cuts: list[int] | None = None) -> Tables:
    """Project ``events`` in batches ending at ``cuts`` (default: one batch per event)."""
    tables = Tables()
    projector = Projector()
    ends = sorted(set(cuts if cuts is not None else range(1, len(events) + 1)) | {len(events)})
    start = 0
    for end in ends:
        batch = Batch()
        for event in events[start:end]:
            projector.apply(event, batch)
        tables.write(batch, projector)
        start = end
    return tables
