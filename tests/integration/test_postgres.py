"""The real Postgres: asyncpg reaches it, and the migration runner applies the project's
migrations once, in order, atomically, even with two runners racing.

Each test works in a throwaway schema (search_path), so it neither sees nor disturbs the tables
the services use in `public`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.common.migrations import (
    MIGRATIONS_DIR,
    Migration,
    MigrationError,
    apply_migrations,
    load_migrations,
)
from services.common.pool import LazyPool
from services.projections.views import MESSAGE_COLUMNS


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        yield name
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


async def connect(database_url: str, schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url, server_settings={"search_path": schema})


async def recorded(conn: asyncpg.Connection) -> list[tuple[int, str]]:
    rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(row["version"], row["name"]) for row in rows]


async def test_asyncpg_connects_to_postgres_15(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert int(await conn.fetchval("SHOW server_version_num")) >= 150000
    finally:
        await conn.close()


async def test_migrations_create_the_bookkeeping_and_the_delivery_ledger(
    database_url: str, schema: str
) -> None:
    conn = await connect(database_url, schema)
    try:
        migrations = load_migrations(MIGRATIONS_DIR)
        applied = await apply_migrations(conn, migrations)

        assert [m.version for m in applied] == [m.version for m in migrations]
        assert await recorded(conn) == [(m.version, m.name) for m in migrations]
        assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.delivery_ledger")
        # The ledger's primary key is what refuses a second claim of the same send.
        claim = (
            "INSERT INTO delivery_ledger (send_id, message_id, contact_id, state)"
            " VALUES ($1, $2, $3, 'claimed')"
        )
        await conn.execute(claim, "m1:c1", "m1", "c1")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(claim, "m1:c1", "m1", "c1")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO delivery_ledger (send_id, message_id, contact_id, state)"
                " VALUES ('m1:c2', 'm1', 'c2', 'sent-twice')"
            )
    finally:
        await conn.close()


async def test_applying_twice_is_a_no_op(database_url: str, schema: str) -> None:
    conn = await connect(database_url, schema)
    try:
        migrations = load_migrations(MIGRATIONS_DIR)
        await apply_migrations(conn, migrations)
        before = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")

        assert await apply_migrations(conn, migrations) == []
        assert await conn.fetch("SELECT * FROM schema_migrations ORDER BY version") == before
    finally:
        await conn.close()


async def test_two_runners_starting_at_once_apply_each_migration_once(
    database_url: str, schema: str
) -> None:
    # A slow second migration widens the window in which an unlocked runner would start the
    # same work again (and fail on the existing table, or record a version twice).
    migrations = [
        *load_migrations(MIGRATIONS_DIR),
        Migration(900, "slow", "SELECT pg_sleep(0.5); CREATE TABLE slow_one (id int);"),
        Migration(901, "after_slow", "CREATE TABLE after_slow (id int);"),
    ]
    first, second = await connect(database_url, schema), await connect(database_url, schema)
    try:
        results = await asyncio.gather(
            apply_migrations(first, migrations), apply_migrations(second, migrations)
        )

        counts = sorted(len(r) for r in results)
        assert counts == [0, len(migrations)]
        assert await recorded(first) == [(m.version, m.name) for m in migrations]
    finally:
        await first.close()
        await second.close()


async def test_a_failing_migration_leaves_nothing_behind(database_url: str, schema: str) -> None:
    base = load_migrations(MIGRATIONS_DIR)
    broken = Migration(900, "broken", "CREATE TABLE half_done (id int); SELECT no_such_column;")
    conn = await connect(database_url, schema)
    try:
        with pytest.raises(asyncpg.UndefinedColumnError):
            await apply_migrations(conn, [*base, broken])

        # The earlier migrations stay applied; the failed one left neither table nor record.
        assert await recorded(conn) == [(m.version, m.name) for m in base]
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None

        fixed = Migration(900, "broken", "CREATE TABLE half_done (id int);")
        assert [m.version for m in await apply_migrations(conn, [*base, fixed])] == [900]
    finally:
        await conn.close()


async def test_an_applied_migration_that_was_edited_is_refused(
    database_url: str, schema: str
) -> None:
    conn = await connect(database_url, schema)
    try:
        migrations = load_migrations(MIGRATIONS_DIR)
        await apply_migrations(conn, migrations)
        first = migrations[0]
        edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")

        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, [edited, *migrations[1:]])
    finally:
        await conn.close()


def test_migration_files_must_follow_the_naming_scheme(tmp_path: Path) -> None:
    (tmp_path / "0001_good.sql").write_text("SELECT 1;")
    assert [m.name for m in load_migrations(tmp_path)] == ["good"]

    (tmp_path / "2_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


async def test_the_messages_view_table_has_exactly_the_row_columns(
    database_url: str, schema: str
) -> None:
    # The store COPYs view_messages with MESSAGE_COLUMNS (the fields of MessageRow) and the
    # reader selects them: the migrated table must hold exactly those columns.
    conn = await connect(database_url, schema)
    try:
        await apply_migrations(conn, load_migrations(MIGRATIONS_DIR))
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = $1 AND table_name = 'view_messages'",
            schema,
        )
    finally:
        await conn.close()

    assert {c["column_name"] for c in columns} == set(MESSAGE_COLUMNS)


async def test_a_lazy_pool_opens_once_for_concurrent_first_uses_and_again_after_close(
    database_url: str,
) -> None:
    stores = LazyPool(database_url, max_size=2)
    try:
        first, second = await asyncio.gather(stores.pool(), stores.pool())
        assert first is second
        assert await first.fetchval("SELECT count(*) FROM schema_migrations") == len(
            load_migrations(MIGRATIONS_DIR)
        )
        await stores.close()
        assert first.is_closing()  # the store's pool is closed by close() ...
        again = await stores.pool()  # ... and the next use opens a new one
        assert again is not first
        assert await again.fetchval("SELECT 1") == 1
    finally:
        await stores.close()
