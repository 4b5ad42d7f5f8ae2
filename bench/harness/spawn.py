"""The services as subprocesses, and waiting on them: one place for the benchmarks and the
integration tests.

* `service_env` / `spawn_service`: `python -m <module>` on a topic prefix (the repository on
  PYTHONPATH, JSON logs), its output into a log file;
* `until`: poll a check until it answers something truthy, bounded, failing at once when one of
  the watched processes died;
* `health` / `healthy` / `owned_partitions`: a service's `GET /health`;
* `cli`: one of the project's command-line tools (`services.commands.apikeys`,
  `services.web.operators`) against a database, its output.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from services.common.settings import Settings

__all__ = [
    "REPO_ROOT",
    "api_key",
    "cli",
    "free_port",
    "health",
    "healthy",
    "owned_partitions",
    "run_cli",
    "service_env",
    "spawn_service",
    "until",
]

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(settings: Settings, **env: str) -> dict[str, str]:
    """The environment of a service on `settings`' broker, topic prefix and partitions."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_PREFIX": settings.topic_prefix,
        "KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "LOG_FORMAT": "json",
        **env,
    }


def spawn_service(
    module: str, settings: Settings, log_path: Path, **env: str
) -> subprocess.Popen[bytes]:
    """`python -m <module>` with `service_env`, stdout and stderr appended to `log_path`."""
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO_ROOT,
        env=service_env(settings, **env),
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def until(
    what: str,
    check: Callable[[], Awaitable[Any]],
    within: float = 60.0,
    *,
    every: float = 0.05,
    processes: Iterable[subprocess.Popen[bytes]] = (),
) -> Any:
    """Poll `check` every `every` seconds until it returns something truthy, and return that;
    fail after `within` seconds, or as soon as one of `processes` has exited with an error
    (a SIGKILL is a test's own doing, not an error)."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        for process in processes:
            code = process.poll()
            if code not in (None, -signal.SIGKILL, 0):
                raise AssertionError(f"a processor exited with {code} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within}s waiting for {what}")
        await asyncio.sleep(every)


async def health(url: str) -> tuple[int, dict[str, Any]]:
    """A `GET /health`'s status and body (0 and {} when it does not answer, {} when the body is
    not a JSON object)."""
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            answer = await client.get(url)
        except httpx.HTTPError:
            return 0, {}
    try:
        body = answer.json()
    except ValueError:
        body = {}
    return answer.status_code, body if isinstance(body, dict) else {}


async def healthy(url: str) -> bool:
    """Whether the `/health` at `url` answers 200 now."""
    return (await health(url))[0] == 200


def owned_partitions(body: dict[str, Any]) -> int:
    """How many partitions a dispatcher's /health body says it owns (one check a partition)."""
    return sum(name.startswith("partition-") for name in body.get("checks", {}))


def run_cli(
    module: str,
    database_url: str,
    *args: str,
    stdin: str | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <args>` against `database_url` (and `env`), however it ends."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "DATABASE_URL": database_url,
            **(env or {}),
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli(
    module: str, database_url: str, *args: str, stdin: str | None = None, timeout: float = 120
) -> str:
    """`run_cli` that must succeed: its output."""
    made = run_cli(module, database_url, *args, stdin=stdin, timeout=timeout)
    made.check_returncode()
    return made.stdout.strip()


def api_key(database_url: str, account: str) -> str:
    """A new API key of `account` (`services.commands.apikeys create`)."""
    return cli("services.commands.apikeys", database_url, "create", "--account", account)
