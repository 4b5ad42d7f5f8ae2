"""Who may act for which account: the rule the intake relay applies to an integrating service's
command (docs/architecture.md, "The command topic's trust boundary"; docs/integrators.md).

An integrating service is a Kafka principal that may write only its own intake topic
(`<prefix>.intake.<principal>`, an ACL), so the topic a record was read from names, with the
broker's authority, who wrote it. What the record claims about its actor is not trusted: the
command is admitted only for an account the principal was granted, and is forwarded with the
principal as its actor. Delivery outcomes are never admitted from an intake: they come only
from the delivery worker, which writes the commands topic as a service principal.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from schemas import Actor
from schemas.wire import CommandRecord

#: The command types an integrating service may never publish.
SERVICE_ONLY_COMMANDS = frozenset({"RecordDeliveryOutcomes"})


@dataclass(frozen=True)
class Admitted:
    """The command as it goes on to the commands topic: acting as the principal."""

    record: CommandRecord


@dataclass(frozen=True)
class Refused:
    """Why the command is not forwarded (the caller's rejected result says so)."""

    reason: str
    field: str


def admit(record: CommandRecord, principal: str, accounts: Collection[str]) -> Admitted | Refused:
    """Admit an integrator's command for an account it was granted, as that principal; refuse
    delivery outcomes, and any other account (whatever the record's actor claims)."""
    command = record.command
    if command.type in SERVICE_ONLY_COMMANDS:
        return Refused(
            f"{command.type} is accepted only from the delivery service, not from an intake",
            "command.type",
        )
    account = record.actor.account_id
    if account not in accounts:
        return Refused(
            f"principal {principal} may not act for account {account}", "actor.account_id"
        )
    actor = Actor(kind="service", account_id=account, service=principal)
    return Admitted(record.model_copy(update={"actor": actor}))
