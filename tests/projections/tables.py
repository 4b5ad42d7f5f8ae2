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
    SEND_COLUMNS,
    Batch,
    Projector,
)

_UPDATED = ("state", "reason", "state_at", "sequence")


@dataclass
class Tables:
    messages: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    base: dict[tuple[UUID, str], dict[str, Any]] = field(default_factory=dict)
    sends: dict[tuple[UUID, str], dict[str, Any]] = field(default_factory=dict)
    history: dict[tuple[UUID, int], tuple[Any, ...]] = field(default_factory=dict)

    @property
    def recipients(self) -> dict[tuple[UUID, str], dict[str, Any]]:
        """Each contact as the read API shows it: its send row's state once released."""
        merged = {}
        for key, row in self.base.items():
            send = self.sends.get(key)
            out = {**row, "batch": None, "released_at": None}
            if send is not None:
                out.update({k: send[k] for k in (*_UPDATED, "batch", "released_at")})
            merged[key] = out
        return merged

    def write(self, batch: Batch, projector: Projector) -> None:
        for row in batch.history:
            assert (row[0], row[1]) not in self.history, "an event written twice"
            self.history[(row[0], row[1])] = row
        for row in batch.inserts():
            assert (row[0], row[1]) not in self.base, "COPY would hit an existing row"
            self.base[(row[0], row[1])] = dict(zip(RECIPIENT_COLUMNS, row, strict=True))
        for row in batch.rewrites():
            assert (row[0], row[1]) in self.base, "a rewrite of a missing row"
            self.base[(row[0], row[1])] = dict(zip(RECIPIENT_COLUMNS, row, strict=True))
        for (message, state, reason, state_at, sequence), ids in batch.update_groups().items():
            for cid in ids:
                old = self.base[(message, cid)]
                old.update(state=state, reason=reason, state_at=state_at, sequence=sequence)
        for row in batch.send_inserts():
            assert (row[0], row[1]) not in self.sends, "COPY would hit an existing send row"
            self.sends[(row[0], row[1])] = dict(zip(SEND_COLUMNS, row, strict=True))
        for key, ids in batch.send_update_groups().items():
            message, state, reason, state_at, sequence = key
            for cid in ids:
                old = self.sends[(message, cid)]
                old.update(state=state, reason=reason, state_at=state_at, sequence=sequence)
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
