"""The audit limited to some messages (services/projections/audit.py `compare(messages=...)`,
`cli compare --message`): a live schema shared with views written from other topics (other
tests, other runs) differs from this topic's rebuild by their rows, which a caller that judges
its own messages (the fault matrix, docs/reliability.md) must not count; a row of its own
message that the log does not hold must still be found.

The topics are the test's own and stay empty: a rebuild of them holds no row, so every live row
is one the log cannot account for."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from uuid import UUID, uuid4

import asyncpg

from bench.harness.processor import REPO_ROOT, Stack
from bench.harness.projections import drop_schema, new_schema, with_schema
from services.projections.audit import compare


async def stray_rows(dsn: str, message: UUID) -> None:
    """A message's rows in the views (and a dead letter keyed by it) that no event of the topic
    wrote: what another topic's projection leaves in a shared schema."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO view_history (message_id, sequence, event_id, type, occurred_at,"
            " actor_kind, actor_account_id, causation_id, correlation_id, detail)"
            " VALUES ($1, 1, $2, 'DraftCreated', now(), 'user', 'acct-x', $2, $2, '{}')",
            message,
            uuid4(),
        )
        await conn.execute(
            'INSERT INTO projection_dead_letters (consumer, topic, partition, "offset", key,'
            " value, error) VALUES ('live', 'elsewhere.events', 0, $1, $2, 'x', 'bad')",
            int(message.int % 1_000_000),
            str(message).encode(),
        )
    finally:
        await conn.close()


async def test_compare_of_some_messages_ignores_other_messages_rows_and_finds_their_own(
    stack: Stack, database_url: str
) -> None:
    live = await new_schema(database_url, "tscope")
    rebuilt = [await new_schema(database_url, "tscoper") for _ in range(3)]
    mine, foreign = uuid4(), uuid4()
    settings = stack.settings.model_copy(update={"database_url": database_url})
    try:
        await stray_rows(with_schema(database_url, live), foreign)

        # The whole tables: the foreign message's row is only live (what failed the fault run).
        whole = await compare(settings, live, rebuilt[0])
        assert not whole.equal
        assert {d.table: d.only_live for d in whole.differences} == {
            "view_history": 1,
            "projection_dead_letters": 1,
        }

        # Limited to this caller's message: the other message's rows are not its concern.
        scoped = await compare(settings, live, rebuilt[1], messages=[mine])
        assert scoped.equal, scoped.as_json()
        assert scoped.rows["view_history"] == 0

        # A row of its own message that the log does not hold is still a difference.
        await stray_rows(with_schema(database_url, live), mine)
        found = await compare(settings, live, rebuilt[2], messages=[mine])
        assert [(d.table, d.only_live, d.only_rebuilt) for d in found.differences] == [
            ("view_history", 1, 0),
            ("projection_dead_letters", 1, 0),
        ]
        assert [r["message_id"] for r in found.differences[0].examples_live] == [str(mine)]

        # The same through the command-line tool, which the fault matrix runs.
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
            "TOPIC_PREFIX": stack.settings.topic_prefix,
        }
        cli = [sys.executable, "-m", "services.projections.cli", "compare", "--live-schema", live]
        for message, equal in ((foreign, False), (uuid4(), True)):
            done = await asyncio.to_thread(
                subprocess.run, [*cli, "--message", str(message)], env=env, capture_output=True
            )
            assert done.returncode == (0 if equal else 1), done.stderr.decode()[-2000:]
            assert json.loads(done.stdout)["equal"] is equal
    finally:
        for schema in (live, *rebuilt):
            await drop_schema(database_url, schema)
