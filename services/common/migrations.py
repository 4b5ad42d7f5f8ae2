"""Versioned SQL migrations for Postgres, applied in order, each inside its own transaction.

Files are named `NNNN_name.sql` (four-digit version, lower-case name). The first migration
creates the `schema_migrations` bookkeeping table (version, name, checksum, applied_at); after
each file the runner records it there, in the same transaction as the file's own statements, so
a crash leaves either both or neither.

Two processes may start at once (two projection workers, or a test and a service): the runner
holds a session-level advisory lock for the whole run, so the second waits, then finds nothing
left to do. The lock key is derived from the current schema, so runs against different schemas
(the tests use throwaway ones) do not wait for each other.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# The one schema of the service's Postgres database (ledger, API keys, views), shared by every
# process; whichever starts first brings it up to date.
MIGRATIONS_DIR = Path(__file__).parent / "sql"

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

# hashtextextended gives a bigint, the advisory lock key type; the prefix keeps the key apart from
# any other advisory lock the application may take later.
_LOCK_KEY_SQL = (
    "SELECT hashtextextended('mailctl.schema_migrations:' || coalesce(current_schema(), ''), 0)"
)


class MigrationError(Exception):
    """Raised when the migration files or the recorded history cannot be applied safely."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    """Read every `NNNN_name.sql` file in `directory`, in version order."""
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = int(match["version"])
        if version in migrations:
            raise MigrationError(f"{path.name}: version {version} appears twice")
        migrations[version] = Migration(version, match["name"], path.read_text())
    return [migrations[v] for v in sorted(migrations)]


async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {int(row["version"]): str(row["checksum"]) for row in rows}


async def apply_migrations(
    conn: asyncpg.Connection, migrations: Sequence[Migration]
) -> list[Migration]:
    """Apply the migrations not yet recorded; return those this call applied (maybe none).

    Raises MigrationError when an applied file has changed since it was applied: the database
    would no longer match what the files describe.
    """
    key = await conn.fetchval(_LOCK_KEY_SQL)
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        # Read the history only once the lock is held: a concurrent runner may just have
        # finished, and what it applied must not be applied again.
        applied = await _applied(conn)
        for migration in migrations:
            recorded = applied.get(migration.version)
            if recorded is not None and recorded != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was "
                    "applied; add a new migration instead of editing an applied one"
                )
        known = {m.version for m in migrations}
        unknown = sorted(set(applied) - known)
        if unknown:
            # A newer release migrated this database; older code may still run against it.
            log.warning("database has migrations this code does not know", versions=unknown)

        done: list[Migration] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                # No arguments: asyncpg uses the simple query protocol, so a file may hold
                # several statements.
                await conn.execute(migration.sql)
                if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} ran but no "
                        "schema_migrations table exists: the first migration must create it"
                    )
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("migration applied", version=migration.version, name=migration.name)
            done.append(migration)
        return done
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
