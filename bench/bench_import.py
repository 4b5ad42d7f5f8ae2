"""CSV import benchmark through the REST API on the real stack (figure in docs/api.md).

    .venv/bin/python -m bench.bench_import [--rows 1000000]

Starts the processor, the projection worker and the commands service (`python -m
services.commands`) as subprocesses on topics and a Postgres schema of their own, creates a
draft, and posts a generated CSV of N rows (contact id, email, time zone, two merge columns) to
`POST /v1/messages/{id}/imports` as a streamed request body. Timed from the first byte sent to
the summary answered: every chunk decided by the processor (its events committed). The issue's
target: 1,000,000 rows in under 60 s on this machine. The peak resident memory of the commands
service is printed too (it must not hold the file).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from bench.cpu import Meter, pidfile
from bench.harness.processor import Stack
from bench.harness.projections import drop_schema, new_schema, spawn_projections, with_schema
from bench.harness.servers import servers
from bench.harness.spawn import api_key

ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "")


async def _rows(n: int) -> AsyncIterator[bytes]:
    yield b"contact_id,email,time_zone,first_name,plan\r\n"
    batch: list[str] = []
    for i in range(n):
        batch.append(f"c{i},person{i}@example.org,{ZONES[i % 4]},Name{i},gold\r\n")
        if len(batch) == 2000:
            yield "".join(batch).encode()
            batch = []
    if batch:
        yield "".join(batch).encode()


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def run(rows: int, bootstrap: str, database_url: str) -> dict[str, Any]:
    """Import `rows` generated rows through the API; the figures as a dict (make bench)."""
    schema = await new_schema(database_url, prefix="bimp")
    dsn = with_schema(database_url, schema)
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(bootstrap, Path(tmp))
        await stack.start()
        try:
            dispatcher = stack.spawn("dispatcher", DATABASE_URL=dsn)
            projections = spawn_projections(stack, dsn)
            commands, base = await stack.start_api(dsn)
            key = await asyncio.to_thread(api_key, dsn, "bench")
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=900
            ) as client:
                content = {
                    "name": "bench import",
                    "from_address": "bench@example.org",
                    "subject": "Hi {{first_name}}",
                    "body": "Hello",
                }
                made = await client.post("/v1/messages", json={"content": content})
                made.raise_for_status()
                message = made.json()["message_id"]
                await client.get(
                    f"/v1/messages/{message}", params={"min_sequence": 1, "wait_s": 30}
                )
                # CPU per process (it does not depend on the load): where the import's time goes.
                meter = Meter(
                    {
                        "api": commands.pid,
                        "dispatcher": dispatcher.pid,
                        "projections": projections.pid,
                        "kafka": pidfile("kafka"),
                        "bench client": os.getpid(),
                    }
                )
                meter.start()
                started = time.perf_counter()
                answer = await client.post(
                    f"/v1/messages/{message}/imports",
                    params={"import_id": str(uuid.uuid4())},
                    content=_rows(rows),
                    headers={"Content-Type": "text/csv"},
                )
                elapsed = time.perf_counter() - started
                used = meter.stop()
                summary = answer.json()
            peak = _rss_kb(commands.pid)
            return {
                "rows": rows,
                "seconds": round(elapsed, 2),
                "rows_per_s": round(rows / elapsed, 1),
                "state": summary.get("state"),
                "added": summary.get("counts", {}).get("added"),
                "chunks": summary.get("chunks_done"),
                "peak_rss_mib": round(peak / 1024),
                # The projection worker is still catching up at the summary: its figure is the
                # part it did meanwhile (it competes for the same two cores).
                "cpu_ms_per_10k_rows": {
                    name: round(seconds * 1000 / (rows / 10_000), 1)
                    for name, seconds in used.items()
                },
                "load_avg": list(os.getloadavg()),
            }
        finally:
            await stack.close()
            await drop_schema(database_url, schema)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_import")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    bootstrap, database_url = servers()[:2]
    found = asyncio.run(run(args.rows, bootstrap, database_url))
    print(
        f"import of {args.rows} rows through the API: {found['seconds']:.1f} s "
        f"({found['rows_per_s']:,.0f} rows/s), state {found['state']}, added {found['added']}, "
        f"chunks {found['chunks']}; commands service peak RSS {found['peak_rss_mib']} MiB; "
        "target for 1,000,000 rows: < 60 s",
        flush=True,
    )
    print(
        f"CPU ms per 10,000 rows: {found['cpu_ms_per_10k_rows']}; load {found['load_avg']}",
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
