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
import asyncio
import hashlib
import hmac
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from schemas.values import is_valid_time_zone
from services.common.logs import configure_logging
from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations
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


def _keep(key: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)  # owner only: it is a live credential
    path.write_text(key + "\n")


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        # The CLI may run before any service has started: bring the schema up to date first.
        await apply_migrations(conn, load_migrations(MIGRATIONS_DIR))
        if args.command == "create":
            print(await create_key(conn, args.account, args.label))
        elif args.command == "dev-key":
            key = await dev_key(conn, args.account, args.kept)
            if key != args.kept:
                _keep(key, settings.dev_api_key_file)
            print(key)
        elif args.command == "time-zone":
            if args.zone is not None:
                await set_time_zone(conn, args.account, args.zone)
            print(await time_zone(conn, args.account))
        elif args.command == "revoke":
            if not await revoke_key(conn, args.key_id):
                print(f"no live key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
        else:
            for k in await list_keys(conn, args.account):
                state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "live"
                print(f"{k.key_id}  {k.account_id}  {state}  {k.label}")
        return 0
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.commands.apikeys")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key; prints it once")
    create.add_argument("--account", required=True)
    create.add_argument("--label", default="")
    dev = sub.add_parser("dev-key", help="the development key make run prints")
    dev.add_argument("--account", default="dev")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    zone = sub.add_parser("time-zone", help="show or set an account's default time zone")
    zone.add_argument("--account", required=True)
    zone.add_argument("zone", nargs="?", help="an IANA zone, e.g. Europe/London")
    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--account")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(
        "apikeys", level=settings.log_level, fmt=settings.log_format, stream=sys.stderr
    )
    if args.command == "dev-key":
        # Kept in .state/ so that every `make run` prints the same key until it is revoked.
        path = settings.dev_api_key_file
        args.kept = path.read_text().strip() if path.exists() else None
    try:
        return asyncio.run(_main(args, settings))
    except (InvalidAccountError, InvalidTimeZoneError) as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
