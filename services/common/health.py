"""Health reporting: run named dependency checks and answer GET /health with the result.

A check is an async callable that returns when the dependency works and raises when it does not.
The report is JSON; HTTP 200 when every check passed, 503 otherwise, so a script or an
orchestrator needs only the status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import structlog

Check = Callable[[], Awaitable[None]]

log = structlog.get_logger(__name__)


class PartitionChecks(Mapping[str, Check]):
    """The fixed checks of a consumer process plus one `partition-N` entry per partition it
    holds, read at every request; an entry fails with the text `problem(N)` returns (None when
    the partition is fine: taken, and its lag within bounds)."""

    def __init__(
        self,
        fixed: Mapping[str, Check],
        partitions: Callable[[], Iterable[int]],
        problem: Callable[[int], str | None],
    ) -> None:
        self.fixed = dict(fixed)
        self.partitions = partitions
        self.problem = problem

    def _check(self, number: int) -> Check:
        async def check() -> None:
            trouble = self.problem(number)
            if trouble is not None:
                raise RuntimeError(trouble)

        return check

    def _all(self) -> dict[str, Check]:
        checks = dict(self.fixed)
        for number in sorted(set(self.partitions())):
            checks[f"partition-{number}"] = self._check(number)
        return checks

    def __getitem__(self, name: str) -> Check:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def lag_problem(lag: int | None, max_lag: int, unit: str = "records") -> str | None:
    """The text of a partition entry whose consumption lags by more than `max_lag`."""
    return f"lag {lag} {unit}" if lag is not None and lag > max_lag else None


async def _timed(check: Check, limit: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), limit)
    except TimeoutError:
        error: str | None = f"no answer within {limit:g}s"
    except Exception as exc:
        kind, text = type(exc).__name__, str(exc)
        error = text if text.startswith(kind) else f"{kind}: {text}" if text else kind
    else:
        error = None
    result: dict[str, Any] = {
        "ok": error is None,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if error is not None:
        result["error"] = error
    return result


async def run_checks(
    service: str, checks: Mapping[str, Check], limit: float
) -> tuple[bool, dict[str, Any]]:
    """Run every check concurrently, each bounded by `limit` seconds; return (healthy, report)."""
    names = list(checks)
    results = await asyncio.gather(*(_timed(checks[name], limit) for name in names))
    healthy = all(r["ok"] for r in results)
    report = {
        "service": service,
        "status": "ok" if healthy else "unavailable",
        "checks": dict(zip(names, results, strict=True)),
    }
    return healthy, report


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    """A minimal HTTP/1.x server for worker processes: GET /health (and GET /metrics when given).

    Workers have no web framework of their own; this keeps them free of one and of its signal
    handling, which would fight with the worker's.
    """

    def __init__(
        self,
        service: str,
        host: str,
        port: int,
        checks: Mapping[str, Check],
        *,
        timeout: float = 3.0,
        details: tuple[str, Callable[[], Any]] | None = None,
        metrics: Callable[[], str] | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.checks = checks
        self.timeout = timeout
        # (key, function): the report also carries function() under key (a worker's figures).
        self.details = details
        # GET /metrics answers function() in the Prometheus text format when given.
        self.metrics = metrics
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/health"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        # Port 0 asks the OS for a free port (tests): report the one actually bound.
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 10)
            while True:  # skip the request headers: nothing in them changes the answer
                line = await asyncio.wait_for(reader.readline(), 10)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            path = path.split("?", 1)[0]
            content_type = "application/json"
            if path not in ("/health", "/metrics") or (path == "/metrics" and not self.metrics):
                status, payload = 404, json.dumps({"error": "not found", "path": path}).encode()
            elif method not in ("GET", "HEAD"):
                status, payload = 405, json.dumps({"error": "method not allowed"}).encode()
            elif path == "/metrics":
                assert self.metrics is not None
                status, payload = 200, self.metrics().encode()
                content_type = "text/plain; version=0.0.4"
            else:
                healthy, body = await run_checks(self.service, self.checks, self.timeout)
                if self.details is not None:
                    body[self.details[0]] = self.details[1]()
                status, payload = (200 if healthy else 503), json.dumps(body).encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head if method == "HEAD" else head + payload)
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("health request dropped", error=repr(exc))
        finally:
            writer.close()
            # The peer may already be gone; nothing is left to tell it.
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
