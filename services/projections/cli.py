"""Audit tool of the read views (docs/projections.md):

    python -m services.projections.cli rebuild [--into SCHEMA]
    python -m services.projections.cli compare [--live-schema S] [--into SCHEMA] [--keep]
        [--message MESSAGE_ID ...]
    python -m services.projections.cli export MESSAGE_ID [--raw] [--out FILE]

`rebuild` replays the whole events topic into the view tables of a fresh schema (created and
migrated; default `rebuild_<time>`), and keeps it. `compare` rebuilds up to exactly the offsets of
the live views and compares every table row for row: prints a JSON report and exits 0 when they
are equal, 1 with the exact differences otherwise; the fresh schema is dropped unless `--keep`;
`--message` (repeatable) limits the comparison to those messages' rows (a live schema shared
with views written from other topics).
`export` writes one message's full history, from the log, as JSON lines.
Settings come from the environment (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, TOPIC_PREFIX); the
live views are those of DATABASE_URL's current schema unless `--live-schema` names another.
Logs go to stderr; stdout carries only the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import asyncpg

from services.common.logs import configure_logging
from services.common.settings import Settings
from services.projections.audit import compare, current_schema, export, rebuild
from services.projections.store import create_schema, quote_ident


def _fresh_name() -> str:
    return f"rebuild_{datetime.now(UTC).strftime('%Y%m%d_%H%M%S_%f')}"


async def _drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


async def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    schema = args.into or _fresh_name()
    started = time.perf_counter()
    await create_schema(settings.database_url, schema)
    reached = await rebuild(settings, schema)
    print(
        json.dumps(
            {
                "schema": schema,
                "offsets": {str(k): v for k, v in sorted(reached.items())},
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    )
    return 0


async def _compare(settings: Settings, args: argparse.Namespace) -> int:
    live = args.live_schema or await current_schema(settings.database_url)
    schema = args.into or _fresh_name()
    await create_schema(settings.database_url, schema)
    try:
        result = await compare(
            settings,
            live,
            schema,
            examples=args.examples,
            messages=[UUID(m) for m in args.message] if args.message else None,
        )
    finally:
        if not args.keep:
            await _drop(settings.database_url, schema)
    print(json.dumps(result.as_json(), indent=2))
    return 0 if result.equal else 1


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    lines = [line async for line in export(settings, UUID(args.message_id), raw=args.raw)]
    text = "".join(line + "\n" for line in lines)
    if args.out:
        await asyncio.to_thread(Path(args.out).write_text, text)
    else:
        sys.stdout.write(text)
    return 0 if lines else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.projections.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    p_rebuild = commands.add_parser("rebuild", help="replay the history into fresh tables")
    p_rebuild.add_argument("--into", help="schema to create (default rebuild_<time>)")
    p_compare = commands.add_parser("compare", help="rebuild and compare with the live views")
    p_compare.add_argument("--into", help="schema to create (default rebuild_<time>)")
    p_compare.add_argument("--live-schema", help="schema of the live views (default: current)")
    p_compare.add_argument("--keep", action="store_true", help="keep the rebuilt schema")
    p_compare.add_argument("--examples", type=int, default=20, help="differing rows shown")
    p_compare.add_argument(
        "--message",
        action="append",
        metavar="MESSAGE_ID",
        help="compare only this message's rows (repeatable; default: every row)",
    )
    p_export = commands.add_parser("export", help="one message's history as JSON lines")
    p_export.add_argument("message_id")
    p_export.add_argument("--raw", action="store_true", help="records as stored, not upcast")
    p_export.add_argument("--out", help="file to write (default stdout)")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(
        "projections-cli", level=settings.log_level, fmt=settings.log_format, stream=sys.stderr
    )
    run = {"rebuild": _rebuild, "compare": _compare, "export": _export}[args.command]
    return asyncio.run(run(settings, args))


if __name__ == "__main__":
    sys.exit(main())
