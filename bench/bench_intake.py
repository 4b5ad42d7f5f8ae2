"""REST intake (issue 15 item 3): contacts added through the REST API in chunks of the documented
maximum (`MAX_CHUNK`, 10,000) by a few concurrent clients, into committed events.

On topics and a Postgres schema of its own: the real API (`python -m services.commands`) and the
dispatcher as subprocesses (no projections worker: the answer of `POST .../recipients` is the
processor's committed result, which does not wait for the views), called over loopback HTTP by
aiohttp clients. Each client owns one draft and posts its chunks one after the other (a message
is decided in order by one partition's owner); the clients run at once. The bodies are encoded
before the clock starts. Timed from the first request to the last answer: contacts/s. Beside it
the CPU milliseconds per 10,000 contacts of each process (they do not depend on the load).

    bash scripts/with_env.sh .venv/bin/python -m bench.bench_intake [--clients 4] [--chunks 10]
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

from bench.bench_commands import CONTENT, percentile
from bench.cpu import cpu_s, pidfile
from bench.harness.projections import stack_with_schema
from bench.harness.servers import servers
from bench.harness.spawn import api_key
from bench.progress import say
from schemas import MAX_CHUNK

TARGET = 50_000  # contacts/s (issue 15 item 3)


def _bodies(client: int, chunks: int, size: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "contacts": [
                    {
                        "contact_id": f"k{client}-{chunk}-{i}",
                        "email": f"k{client}.{chunk}.{i}@example.org",
                        "time_zone": "Europe/London" if i % 3 == 0 else None,
                        "attributes": {"first_name": f"Name{i}", "plan": "gold"},
                    }
                    for i in range(size)
                ]
            }
        ).encode()
        for chunk in range(chunks)
    ]


async def run(
    clients: int, chunks: int, tmp: Path, bootstrap: str, database: str, size: int = MAX_CHUNK
) -> dict[str, Any]:
    async with stack_with_schema(bootstrap, database, tmp / "intake", "bench_intake") as (
        stack,
        dsn,
        schema,
    ):
        key = await asyncio.to_thread(api_key, dsn, f"bench-{schema[-6:]}")
        dispatcher = stack.spawn("dispatcher", TICK_INTERVAL_S="1.0")
        api, base = await stack.start_api(dsn)
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(
            base_url=base, timeout=aiohttp.ClientTimeout(total=300)
        ) as http:

            async def call(path: str, body: bytes) -> tuple[int, Any]:
                headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
                async with http.post(path, data=body, headers=headers) as answer:
                    return answer.status, await answer.json(content_type=None)

            # Built before the first request: on a loaded machine building them took longer than
            # the API's keep-alive (then 5 s), and the idle pooled connections were closed under the
            # client's first chunk ("Can not write request body").
            bodies = [_bodies(c, chunks, size) for c in range(clients)]
            messages = []
            for _ in range(clients):
                status, made = await call("/v1/messages", json.dumps({"content": CONTENT}).encode())
                if status != 201:
                    raise RuntimeError(f"create: {status} {made}")
                messages.append(made["message_id"])
            # A first small chunk each: the dispatcher owns the partitions, the paths are warm.
            for n, message in enumerate(messages):
                warm = json.dumps(
                    {"contacts": [{"contact_id": f"w{n}", "email": f"w{n}@example.org"}]}
                ).encode()
                status, answer = await call(f"/v1/messages/{message}/recipients", warm)
                if status != 200:
                    raise RuntimeError(f"warm-up chunk: {status} {answer}")
            say("intake", f"{clients} clients x {chunks} chunks of {size:,} contacts")
            latencies: list[float] = []
            added = 0
            errors: list[str] = []

            async def client(n: int) -> None:
                nonlocal added
                for k, body in enumerate(bodies[n]):
                    sent = time.perf_counter()
                    status, answer = await call(f"/v1/messages/{messages[n]}/recipients", body)
                    latencies.append((time.perf_counter() - sent) * 1000)
                    if status != 200:
                        errors.append(f"{status} {str(answer)[:200]}")
                        continue
                    added += answer.get("audience", {}).get("counts", {}).get("added", 0)
                    if n == 0:
                        say("intake", "chunks answered (client 1)", k + 1, chunks)

            pids = {"bench client": os.getpid(), "api": api.pid, "dispatcher": dispatcher.pid}
            if (kafka := pidfile("kafka")) is not None:
                pids["kafka"] = kafka
            before = {name: cpu_s(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            await asyncio.gather(*(client(n) for n in range(clients)))
            wall = time.perf_counter() - started
        contacts = clients * chunks * size
        per_10k: dict[str, float] = {}
        cores: dict[str, float] = {}
        for name, pid in pids.items():
            now, then = cpu_s(pid), before[name]
            if now is not None and then is not None:
                per_10k[name] = round((now - then) * 1000 / (contacts / 10_000), 1)
                cores[name] = round((now - then) / wall, 3)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        return {
            "contacts": contacts,
            "clients": clients,
            "chunk": size,
            "seconds": round(wall, 2),
            "contacts_per_s": round(contacts / wall, 1),
            "added": added,
            "errors": len(errors),
            "first_errors": errors[:3],
            "chunk_p50_ms": round(p50 or 0, 1),
            "chunk_p99_ms": round(p99 or 0, 1),
            "cpu_ms_per_10k_contacts": per_10k,
            "cpu_cores_used": cores,
            "load_avg": list(os.getloadavg()),
        }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_intake")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=10)
    args = parser.parse_args(argv)
    bootstrap, database = servers()[:2]
    with tempfile.TemporaryDirectory() as tmp:
        found = asyncio.run(run(args.clients, args.chunks, Path(tmp), bootstrap, database))
    print(json.dumps(found, indent=2), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
