"""Building events with their envelope: deterministic ids and consecutive sequence numbers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from core.ids import event_id
from schemas import Actor, EventBase

__all__ = ["Emitter"]

E = TypeVar("E", bound=EventBase)


class Emitter:
    """Numbers the events of one message from ``version + 1`` on, all with one envelope."""

    __slots__ = ("actor", "causation_id", "correlation_id", "message_id", "occurred_at", "version")

    def __init__(
        self,
        *,
        message_id: UUID,
        version: int,
        occurred_at: datetime,
        actor: Actor,
        correlation_id: UUID,
        causation_id: UUID,
    ) -> None:
        self.message_id = message_id
        self.version = version
        self.occurred_at = occurred_at
        self.actor = actor
        self.correlation_id = correlation_id
        self.causation_id = causation_id

    def __call__(self, cls: type[E], **payload: Any) -> E:
        """The next event of this message, of class ``cls`` with ``payload``."""
        self.version += 1
        return cls(
            event_id=event_id(self.message_id, self.version),
            message_id=self.message_id,
            sequence=self.version,
            occurred_at=self.occurred_at,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            actor=self.actor,
            **payload,
        )
