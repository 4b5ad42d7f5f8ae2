"""Domain errors. The shell maps them to HTTP in one place: 404, 409 (see docs/core.md)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CommandNotAllowedError",
    "DomainError",
    "EventOutOfOrderError",
    "InvalidCommandError",
    "MessageAlreadyExistsError",
    "MessageNotFoundError",
]


class DomainError(Exception):
    """Raised when a command breaks a rule of the product (base of every core error)."""


class MessageNotFoundError(DomainError):
    """Raised when a message is unknown or belongs to another account (the same answer: 404)."""

    def __init__(self, message_id: object) -> None:
        super().__init__(f"message {message_id} not found")
        self.message_id = message_id


class MessageAlreadyExistsError(DomainError):
    """Raised when a create or copy names a message id that is already taken (409)."""

    def __init__(self, message_id: object) -> None:
        super().__init__(f"message {message_id} already exists")
        self.message_id = message_id


class CommandNotAllowedError(DomainError):
    """Raised when a command is not allowed in the message's current status (409)."""

    def __init__(self, command: str, status: str, allowed: Sequence[str]) -> None:
        allowed_text = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"{command} is not allowed while the message is {status}; allowed: {allowed_text}"
        )
        self.command = command
        self.status = status
        self.allowed = tuple(allowed)


class InvalidCommandError(DomainError):
    """Raised when a command's value breaks a rule that depends on time or state (409
    `conflict`: the request is well formed, its document allows it; the message's state or the
    clock refuses it)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class EventOutOfOrderError(DomainError):
    """Raised when an event folded into a state does not carry the next sequence number."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"expected event sequence {expected}, got {got}")
        self.expected = expected
        self.got = got
