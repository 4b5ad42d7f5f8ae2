"""The pure core run again on a message's history, for the rows whose commands race the send
(docs/reliability.md, "Commands racing the send").

The dispatcher decides every record of a commands-topic partition (commands, clock ticks,
delivery outcomes, copied events) with the pure partition decider, at the record's log
timestamp (services/dispatcher/decider.py). Run again from an empty state over the same
records in the same order, the decider must decide exactly the events the log holds: whatever
the faults and the races did to the processes, the outcome is the one the core gives for that
history. No I/O here: the records are read by the caller (faults/run.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from schemas import Event
from services.dispatcher.decider import Input, PartitionState, Rules, WriteEvent, decide_record


def replay(records: Iterable[Input], rules: Rules, message_id: UUID) -> list[Event]:
    """The events of ``message_id`` that the decider decides over ``records`` (one partition's
    commands from its first offset, in order), from an empty state."""
    state: PartitionState | None = None
    events: list[Event] = []
    for record in records:
        if state is None:
            state = PartitionState(record.partition)
        for write in decide_record(state, record, rules).writes:
            if isinstance(write, WriteEvent) and write.event.message_id == message_id:
                events.append(write.event)
    return events
