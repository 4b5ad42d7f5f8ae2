"""The pure core of the batch-message service: every product rule, no I/O, no clock, no random.

* :func:`decide` turns a command into events against a message's state (or raises a domain
  error);
* :func:`evolve` folds one event into the state;
* :func:`plan` says what happens to a message at a clock tick (starts, releases, skips, sent).

Time, the actor and the account's default zone come in as data (:class:`Context`, ticks); event
ids and send ids are derived deterministically (:mod:`core.ids`).
"""

from core.book import RecipientBook, RecipientStatus, ZoneQueue
from core.context import Context
from core.decide import SCHEDULE_GRACE, decide
from core.errors import (
    CommandNotAllowedError,
    DomainError,
    EventOutOfOrderError,
    InvalidCommandError,
    MessageAlreadyExistsError,
    MessageNotFoundError,
)
from core.evolve import PLANNED_EVENT_TYPES, evolve, fold
from core.ids import event_id, send_id
from core.plan import DISPATCHER, RATE_WINDOW, plan, start_instant
from core.state import (
    ACTIVE_STATUSES,
    ALLOWED_COMMANDS,
    TESTABLE_STATUSES,
    MessageState,
    MessageStatus,
    Pause,
    Schedule,
)
from core.timezones import local_to_instant, wall_clock

__all__ = [
    "ACTIVE_STATUSES",
    "ALLOWED_COMMANDS",
    "DISPATCHER",
    "PLANNED_EVENT_TYPES",
    "RATE_WINDOW",
    "SCHEDULE_GRACE",
    "TESTABLE_STATUSES",
    "CommandNotAllowedError",
    "Context",
    "DomainError",
    "EventOutOfOrderError",
    "InvalidCommandError",
    "MessageAlreadyExistsError",
    "MessageNotFoundError",
    "MessageState",
    "MessageStatus",
    "Pause",
    "RecipientBook",
    "RecipientStatus",
    "Schedule",
    "ZoneQueue",
    "decide",
    "event_id",
    "evolve",
    "fold",
    "local_to_instant",
    "plan",
    "send_id",
    "start_instant",
    "wall_clock",
]
