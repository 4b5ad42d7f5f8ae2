"""The read API's recipients list at size (issue 15 item 4): keyset pages of a message of
10,000,000 recipients, over HTTP.

The rows are written straight into `view_recipients` of a Postgres schema of its own (one
`INSERT ... SELECT` over `generate_series` on the server: the table as the projections leave it,
without the hours of catching up a real 10,000,000-recipient send), with the message's row in
`view_messages`, then `ANALYZE`. States: 97 % delivered, 2 % pending, 1 % failed, spread over the
audience. The real API (`python -m services.commands`) serves
`GET /v1/messages/{id}/recipients` (100 per page, the default): the time of each request from
sent to its whole answer read, p50 and p99 per kind of page:

* `first`: the first page; `middle` and `last`: the page after a cursor half-way and near the
  end (keyset: `after=<last contact id of the page before>`); `walk`: 20 pages in a row from
  the middle, each cursor from the answer before;
* `not_delivered`: the first page of `not_delivered=true` (3 % of the rows match).

    bash scripts/with_env.sh .venv/bin/python -m bench.bench_paging [--rows 10000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.bench_commands import percentile
from bench.harness.projections import stack_with_schema
from bench.harness.servers import servers
from bench.harness.spawn import api_key
from bench.progress import say

TARGET_MS = 50.0  # a page, p99 (issue 15 item 4)
SAMPLES = 20


def _cid(n: int) -> str:
    return f"c{n:09d}"


async def _fill(dsn: str, account: str, message_id: uuid.UUID, rows: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.execute(
            """INSERT INTO view_messages (message_id, account_id, status, name, subject,
                   from_address, mode, missed_zone_policy, release_rate, created_at, created_by,
                   audience, pending, released, delivered, failed, skipped, removed, excluded,
                   "unknown", last_sequence, updated_at)
               VALUES ($1, $2, 'sent', 'Paging bench', 'Hi', 'bench@example.org', 'fixed',
                   'send_on_resume', 10000, now(), '{"kind": "service"}', $3, 0, 0, $3, 0, 0, 0,
                   0, 0, 3, now())""",
            message_id,
            account,
            rows,
        )
        # In slices, each its own statement: progress shows, and no single huge transaction.
        step = 1_000_000
        for first in range(0, rows, step):
            await conn.execute(
                """INSERT INTO view_recipients (message_id, contact_id, email, time_zone, state,
                       reason, batch, added_at, released_at, state_at, sequence, attributes)
                   SELECT $1, 'c' || lpad(n::text, 9, '0'), 'person' || n || '@example.org',
                          NULL,
                          CASE WHEN n % 100 = 7 THEN 'failed'
                               WHEN n % 100 IN (3, 55) THEN 'pending' ELSE 'delivered' END,
                          CASE WHEN n % 100 = 7 THEN 'mailbox full' END,
                          n / 10000, now(), now(), now(), 3, '{"first_name": "Ada"}'
                     FROM generate_series($2::int, $3::int) AS n""",
                message_id,
                first,
                min(rows, first + step) - 1,
            )
            say("paging", "rows written", min(rows, first + step), rows)
        await conn.execute("ANALYZE view_recipients")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def timed_get(
    http: aiohttp.ClientSession, path: str, headers: dict[str, str], params: dict[str, str]
) -> tuple[float, dict[str, Any]]:
    """One GET of the read API: milliseconds from sent to its whole answer read, and the answer
    (any status but 200 raises)."""
    sent = time.perf_counter()
    async with http.get(path, params=params, headers=headers) as answer:
        body = json.loads(await answer.read())
        if answer.status != 200:
            raise RuntimeError(f"{answer.status}: {str(body)[:200]}")
    return (time.perf_counter() - sent) * 1000, body


async def run(rows: int, tmp: Path, bootstrap: str, database: str) -> dict[str, Any]:
    async with stack_with_schema(bootstrap, database, tmp / "paging", "bench_paging") as (
        stack,
        dsn,
        schema,
    ):
        account = f"bench-{schema[-6:]}"
        key = await asyncio.to_thread(api_key, dsn, account)
        message_id = uuid.uuid4()
        say("paging", f"writing {rows:,} rows into view_recipients")
        fill_s = await _fill(dsn, account, message_id, rows)
        _, base = await stack.start_api(dsn)
        path = f"/v1/messages/{message_id}/recipients"
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(
            base_url=base, timeout=aiohttp.ClientTimeout(total=60)
        ) as http:

            async def page(params: dict[str, str]) -> tuple[float, dict[str, Any]]:
                return await timed_get(http, path, headers, params)

            await page({})  # warm: the connection pools, the plans
            kinds: dict[str, dict[str, str]] = {
                "first": {},
                "middle": {"after": _cid(rows // 2)},
                "last": {"after": _cid(max(0, rows - 150))},
                "not_delivered": {"not_delivered": "true"},
            }
            found: dict[str, Any] = {}
            for name, params in kinds.items():
                times = []
                items = 0
                for _ in range(SAMPLES):
                    took, body = await page(params)
                    times.append(took)
                    items = len(body.get("items", body.get("recipients", [])))
                found[name] = {
                    "p50_ms": round(percentile(times, 50) or 0, 2),
                    "p99_ms": round(percentile(times, 99) or 0, 2),
                    "items": items,
                }
                say("paging", f"{name}: {found[name]}")
            walk: list[float] = []
            params = dict(kinds["middle"])
            for _ in range(SAMPLES):
                took, body = await page(params)
                walk.append(took)
                cursor = body.get("next_after") or body.get("next")
                if not cursor:
                    break
                params = {"after": str(cursor)}
            found["walk"] = {
                "p50_ms": round(percentile(walk, 50) or 0, 2),
                "p99_ms": round(percentile(walk, 99) or 0, 2),
                "pages": len(walk),
            }
            say("paging", f"walk: {found['walk']}")
        # The query alone, in Postgres (no HTTP, no API, no client): what the rows cost.
        conn = await asyncpg.connect(dsn)
        try:
            plan = await conn.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) SELECT r.contact_id, r.email, r.state"
                " FROM view_recipients r JOIN view_messages m"
                "   ON m.message_id = r.message_id AND m.account_id = $2"
                " WHERE r.message_id = $1 AND r.contact_id > $3 ORDER BY r.contact_id LIMIT 100",
                message_id,
                account,
                _cid(rows // 2),
            )
        finally:
            await conn.close()
        found["middle_query_ms"] = round(json.loads(plan)[0]["Execution Time"], 3)
        keyset = [found[k]["p99_ms"] for k in ("first", "middle", "last", "walk")]
        return {
            "rows": rows,
            "fill_s": round(fill_s, 1),
            "pages": found,
            "keyset_p99_ms": max(keyset),
            "load_avg": list(os.getloadavg()),
        }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_paging")
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args(argv)
    bootstrap, database = servers()[:2]
    with tempfile.TemporaryDirectory() as tmp:
        found = asyncio.run(run(args.rows, Path(tmp), bootstrap, database))
    print(json.dumps(found, indent=2), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
