"""`make run`'s last step, the banner (scripts/run_banner.sh), on non-default ports (issue 13,
item 7): with only PG_PORT (and the other port variables) set, and no DATABASE_URL, its
API-key and operator steps reach the Postgres on that port.

The test puts the running Postgres behind a TCP relay on a free port of its own, so the port is
not the default whatever ports the stack runs on, and nothing is listening for the banner on
the default port's server unless it ignores PG_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from bench.harness.processor import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def relay(target_host: str, target_port: int) -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP relay from a free local port to the target; yields the port and the list that
    counts the connections it relayed."""
    connections: list[int] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield port, connections
    finally:
        server.close()


async def test_the_banner_works_on_non_default_ports() -> None:
    database = urlsplit(os.environ["DATABASE_URL"])
    assert database.hostname is not None and database.port is not None
    async with relay(database.hostname, database.port) as (pg_port, connections):
        assert pg_port != 15432
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_SINK_URL"}
        }
        env |= {
            "PG_PORT": str(pg_port),
            "COMMANDS_PORT": "28480",
            "DISPATCHER_HEALTH_PORT": "28481",
            "DELIVERY_HEALTH_PORT": "28482",
            "PROJECTIONS_HEALTH_PORT": "28483",
        }
        banner = await asyncio.create_subprocess_exec(
            "bash",
            str(REPO_ROOT / "scripts/run_banner.sh"),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(banner.communicate(), 120)
    text = out.decode()
    assert banner.returncode == 0, err.decode()
    # The API-key and operator steps went through the port given (not the default's server).
    assert len(connections) >= 2
    assert f"postgresql://mailctl:mailctl@127.0.0.1:{pg_port}/mailctl" in text
    assert "http://127.0.0.1:28480/ui" in text and "http://127.0.0.1:28483/health" in text
    key = re.search(r"^\s+(mk_\S+)$", text, re.MULTILINE)
    assert key is not None, text
    email = re.search(r"email\s+(\S+@\S+)", text)
    assert email is not None, text
    # The key and the operator are in the database the port reached.
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        operators = await conn.fetchval(
            "SELECT count(*) FROM operators WHERE email = $1", email.group(1)
        )
    finally:
        await conn.close()
    assert operators == 1


def banner(**env: str) -> str:
    run = subprocess.run(
        ["bash", "scripts/run_banner.sh"],
        cwd=REPO_ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "SMTP_HOST"}, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return run.stdout


def test_the_banner_prints_the_sink_only_when_there_is_one() -> None:
    local = banner()
    external = banner(SMTP_HOST="mail.example.org", SMTP_PORT="2525")

    assert "SMTP sink (received mail) http://127.0.0.1:" in local
    assert "SMTP sink" not in external and "/messages" not in external
    assert "SMTP (external, no sink)  mail.example.org:2525" in external
