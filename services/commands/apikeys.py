"""Per-account API keys: created and revoked from the command line, stored hashed in Postgres.

A key reads `mk_<key id>.<secret>`. The key id is public (it names the key in listings and logs);
only the SHA-256 of the secret is stored, so a copy of the database gives no usable key.

    python -m services.commands.apikeys create --account ACCOUNT [--label TEXT]
    python -m services.commands.apikeys revoke KEY_ID
    python -m services.commands.apikeys list [--account ACCOUNT]
    python -m services.commands.apikeys dev-key [--account dev]   # what `make run` prints
    python -m services.commands.apikeys time-zone --account ACCOUNT [ZONE]   # show or set
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from schemas.values import is_valid_time_zone
from services.common.admin import AdminCli, renewed, reported
from services.common.settings import Settings

_KEY = re.compile(r"^mk_(?P<key_id>[0-9a-f]{16})\.(?P<secret>[A-Za-z0-9_-]{43})$")
ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidAccountError(ValueError):
    """Raised when an account id is empty, too long, or holds characters outside [A-Za-z0-9_.-]."""


class InvalidTimeZoneError(ValueError):
    """Raised when an account's default time zone is not an IANA zone known to zoneinfo."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    account_id: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(conn: asyncpg.Connection, account_id: str, label: str = "") -> str:
    """Create a key for `account_id` and return it whole: the only time the secret is seen."""
    if not ACCOUNT.match(account_id):
        raise InvalidAccountError(f"invalid account id {account_id!r}")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_keys (key_id, account_id, secret_hash, label) VALUES ($1, $2, $3, $4)",
        key_id,
        account_id,
        _hash(secret),
        label,
    )
    return f"mk_{key_id}.{secret}"


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> bool:
    """Revoke a key; True when a live key was revoked, False when none was (unknown or revoked)."""
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    return bool(status == "UPDATE 1")


async def list_keys(conn: asyncpg.Connection, account_id: str | None = None) -> list[ApiKey]:
    rows = await conn.fetch(
        "SELECT key_id, account_id, label, created_at, revoked_at FROM api_keys"
        " WHERE $1::text IS NULL OR account_id = $1 ORDER BY created_at, key_id",
        account_id,
    )
    return [ApiKey(**dict(row)) for row in rows]


async def account_for(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> str | None:
    """The account a presented key belongs to, or None for a malformed, unknown or revoked key."""
    match = _KEY.match(key)
    if match is None:
        return None
    row = await conn.fetchrow(
        "SELECT account_id, secret_hash FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL",
        match["key_id"],
    )
    # compare_digest: the time taken does not tell how much of a guessed secret was right.
    if row is None or not hmac.compare_digest(row["secret_hash"], _hash(match["secret"])):
        return None
    return str(row["account_id"])


async def dev_key(conn: asyncpg.Connection, account_id: str, kept: str | None) -> str:
    """The development key `make run` prints: the kept one while it still works for
    `account_id`, else a new one."""
    if kept and await account_for(conn, kept) == account_id:
        return kept
    return await create_key(conn, account_id, label="dev key printed by make run")


async def time_zone(conn: asyncpg.Connection | asyncpg.Pool, account_id: str) -> str:
    """The account's default time zone (for contacts without one): UTC unless set."""
    zone = await conn.fetchval(
        "SELECT default_time_zone FROM accounts WHERE account_id = $1", account_id
    )
    return str(zone) if zone else "UTC"


async def set_time_zone(conn: asyncpg.Connection, account_id: str, zone: str) -> None:
    """Set the account's default time zone; commands issued from then on carry it."""
    if not ACCOUNT.match(account_id):
        raise InvalidAccountError(f"invalid account id {account_id!r}")
    if not is_valid_time_zone(zone):
        raise InvalidTimeZoneError(f"unknown IANA time zone {zone!r}")
    await conn.execute(
        "INSERT INTO accounts (account_id, default_time_zone) VALUES ($1, $2)"
        " ON CONFLICT (account_id) DO UPDATE SET default_time_zone = EXCLUDED.default_time_zone",
        account_id,
        zone,
    )


async def _create(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> int:
    print(await create_key(conn, args.account, args.label))
    return 0


async def _dev_key(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    # Kept in .state/ so that every `make run` prints the same key until it is revoked.
    print(await renewed(settings.dev_api_key_file, lambda kept: dev_key(conn, args.account, kept)))
    return 0


async def _revoke(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> int:
    done = await revoke_key(conn, args.key_id)
    return reported(done, f"revoked {args.key_id}", f"no live key {args.key_id}")


async def _time_zone(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> int:
    if args.zone is not None:
        await set_time_zone(conn, args.account, args.zone)
    print(await time_zone(conn, args.account))
    return 0


async def _list(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> int:
    for k in await list_keys(conn, args.account):
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "live"
        print(f"{k.key_id}  {k.account_id}  {state}  {k.label}")
    return 0


def main(argv: list[str] | None = None) -> int:
    cli = AdminCli(
        "python -m services.commands.apikeys",
        errors=(InvalidAccountError, InvalidTimeZoneError),
        log_name="apikeys",
    )
    create = cli.command("create", "create a key; prints it once", _create)
    create.add_argument("--account", required=True)
    create.add_argument("--label", default="")
    dev = cli.command("dev-key", "the development key make run prints", _dev_key)
    dev.add_argument("--account", default="dev")
    revoke = cli.command("revoke", "revoke a key by its id", _revoke)
    revoke.add_argument("key_id")
    zone = cli.command("time-zone", "show or set an account's default time zone", _time_zone)
    zone.add_argument("--account", required=True)
    zone.add_argument("zone", nargs="?", help="an IANA zone, e.g. Europe/London")
    listing = cli.command("list", "list keys (never their secrets)", _list)
    listing.add_argument("--account")
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
