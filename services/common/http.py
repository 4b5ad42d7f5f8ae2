"""Running an ASGI app (FastAPI) as the whole process, with uvicorn."""

from __future__ import annotations

import signal

import uvicorn
from fastapi import FastAPI

#: Seconds an idle client connection is kept open. uvicorn's default is 5 s, shorter than the
#: idle timeout of most clients' connection pools and load balancers (60 s is common): a client
#: then sends its next request on a connection the server is closing and gets a disconnect it
#: did not cause (the command bench did, docs/benchmarks.md). The server's keep-alive must
#: outlast the client's, so it is 75 s, as nginx's default.
KEEP_ALIVE_S = 75


def _ignore(signum: int, frame: object) -> None:
    """The process is already shutting down cleanly; nothing is left to do on the signal."""


def run_http_service(app: FastAPI, host: str, port: int, *, fast: bool = False) -> None:
    """Serve `app` until SIGTERM or SIGINT, then shut down gracefully and exit 0.

    uvicorn shuts down gracefully on those signals, then restores the handlers it found and
    raises the signal again for them. With the default handlers a clean shutdown would end as
    "killed by SIGTERM" (or with a KeyboardInterrupt traceback); with these it exits 0, like the
    worker processes.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    # log_config=None: uvicorn's loggers propagate to the handler configure_logging installed.
    # `fast` (the commands API): uvloop and httptools (C) rather than asyncio's pure-Python
    # loop and h11, and no access log: at 200 commands/s the loop, the HTTP parser and a log
    # line per request were a large part of the API's CPU (docs/api.md "Latency"); the commands
    # log their own line ("command answered") and errors are logged where they happen.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        loop="uvloop" if fast else "asyncio",
        http="httptools" if fast else "h11",
        access_log=not fast,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
