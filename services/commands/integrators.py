"""Integrating services: their Kafka principal, intake topic and the accounts they may act for
(docs/integrators.md; the rule: core/trust.py; the relay: services/dispatcher/intake.py).

    python -m services.commands.integrators create NAME --account ACCOUNT [--account ...]
        # a SCRAM user NAME with a new password (printed once), its intake topic
        # <prefix>.intake.NAME, the ACL that lets it write that topic only, and the grants
    python -m services.commands.integrators grant NAME ACCOUNT
    python -m services.commands.integrators revoke NAME ACCOUNT
    python -m services.commands.integrators list [NAME]

`create` talks to Kafka as the process's principal, which must be a super user (the admin:
`scripts/with_env.sh` exports it for the broker the scripts run). The grants are rows of
`integrator_accounts` in Postgres, read by the relay for every batch: a revoke holds from the
next batch on.
"""

from __future__ import annotations

import argparse
import re
import sys

import asyncpg

from services.commands.apikeys import ACCOUNT, InvalidAccountError
from services.common.admin import AdminCli, reported
from services.common.kafka_admin import (
    SERVICE_PRINCIPALS,
    create_acls,
    create_intake_topic,
    integrator_acls,
    new_password,
    upsert_scram_user,
)
from services.common.settings import Settings

#: An integrator's name is a Kafka principal and a topic-name suffix.
PRINCIPAL = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class InvalidPrincipalError(ValueError):
    """Raised when an integrator's name is not [a-z0-9-], or names a service principal."""


def check_principal(name: str) -> str:
    if not PRINCIPAL.match(name) or name in SERVICE_PRINCIPALS or name.startswith("mailctl-"):
        raise InvalidPrincipalError(
            f"invalid integrator name {name!r}: [a-z0-9-], at most 63, not mailctl-*"
        )
    return name


async def grant(conn: asyncpg.Connection, principal: str, account_id: str) -> None:
    check_principal(principal)
    if not ACCOUNT.match(account_id):
        raise InvalidAccountError(f"invalid account id {account_id!r}")
    await conn.execute(
        "INSERT INTO integrator_accounts (principal, account_id) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING",
        principal,
        account_id,
    )


async def revoke(conn: asyncpg.Connection, principal: str, account_id: str) -> bool:
    done: str = await conn.execute(
        "DELETE FROM integrator_accounts WHERE principal = $1 AND account_id = $2",
        principal,
        account_id,
    )
    return done != "DELETE 0"


async def accounts_of(conn: asyncpg.Connection, principal: str) -> frozenset[str]:
    """The accounts `principal` may act for (what the relay checks against)."""
    rows = await conn.fetch(
        "SELECT account_id FROM integrator_accounts WHERE principal = $1", principal
    )
    return frozenset(str(row["account_id"]) for row in rows)


async def create(settings: Settings, name: str) -> tuple[str, str]:
    """The integrator's SCRAM user (a new password), intake topic and ACL; returns both."""
    check_principal(name)
    password = new_password()
    await upsert_scram_user(settings, name, password)
    topic = await create_intake_topic(settings, name)
    await create_acls(settings, integrator_acls(settings.topic_prefix, name))
    return password, topic


async def _create(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    for account in args.account:
        await grant(conn, args.name, account)
    password, topic = await create(settings, args.name)
    print(f"principal={args.name}")
    print(f"password={password}")
    print(f"intake_topic={topic}")
    print(f"accounts={','.join(sorted(await accounts_of(conn, args.name)))}")
    return 0


async def _grant(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> int:
    await grant(conn, args.name, args.account)
    print(f"{args.name} may act for {args.account}")
    return 0


async def _revoke(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> int:
    done = await revoke(conn, args.name, args.account)
    return reported(
        done,
        f"{args.name} may no longer act for {args.account}",
        f"{args.name} had no grant for {args.account}",
    )


async def _list(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> int:
    rows = await conn.fetch(
        "SELECT principal, account_id, granted_at FROM integrator_accounts"
        " WHERE $1::text IS NULL OR principal = $1 ORDER BY principal, account_id",
        args.name,
    )
    for row in rows:
        print(f"{row['principal']}  {row['account_id']}  {row['granted_at']:%Y-%m-%d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    cli = AdminCli(
        "python -m services.commands.integrators",
        errors=(InvalidAccountError, InvalidPrincipalError),
    )
    new = cli.command("create", "principal, password (printed once), intake topic, grants", _create)
    new.add_argument("name")
    new.add_argument("--account", action="append", default=[], help="an account it may act for")
    for verb, handler in (("grant", _grant), ("revoke", _revoke)):
        cmd = cli.command(verb, f"{verb} one account", handler)
        cmd.add_argument("name")
        cmd.add_argument("account")
    listing = cli.command("list", "the grants", _list)
    listing.add_argument("name", nargs="?")
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
