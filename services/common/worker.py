"""The shell of a worker process: a health server, signal handling and an optional main task.

SIGTERM and SIGINT end the process cleanly (exit code 0). When the main task fails, the failure
is logged and the process exits non-zero, so a supervisor sees it instead of a silent zombie.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import structlog

from services.common.health import Check, HealthServer

Closer = Callable[[], Awaitable[None]]
Main = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

log = structlog.get_logger(__name__)


async def unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``work`` until it ends or ``stop`` is set, whichever comes first; on the stop it is
    cancelled. True when it ended (its failure is raised), False when the stop came first. For
    work that only reads and may take long (the takes of a worker's loop): a stop signal must
    not wait for it."""
    task = asyncio.create_task(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        return False
    task.result()
    return True


async def run_worker(
    service: str,
    *,
    host: str,
    port: int,
    checks: Mapping[str, Check],
    check_timeout: float,
    main: Main | None = None,
    closers: Sequence[Closer] = (),
    details: tuple[str, Callable[[], Any]] | None = None,
    metrics: Callable[[], str] | None = None,
) -> None:
    """Serve /health until a stop signal; run `main(stop)` alongside when given.

    The process lives as long as `main` does: a main that has work to wait for returns when
    `stop` is set, and a main that returns early (or raises) ends the process.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = HealthServer(
        service, host, port, checks, timeout=check_timeout, details=details, metrics=metrics
    )
    await server.start()
    log.info("started", health_url=server.url)
    main_task = asyncio.create_task(main(stop)) if main is not None else None
    stop_task = asyncio.create_task(stop.wait())
    try:
        waiting: set[asyncio.Task[Any]] = {stop_task}
        if main_task is not None:
            waiting.add(main_task)
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if main_task is not None and main_task.done():
            main_task.result()  # re-raises the failure that ended the main task
        log.info("stopping")
        stop.set()
        if main_task is not None:
            # main() is expected to return soon after `stop` is set.
            await main_task
    finally:
        stop_task.cancel()
        if main_task is not None and not main_task.done():
            main_task.cancel()
        await server.close()
        for close in closers:
            await close()
        log.info("stopped")
