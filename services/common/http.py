"""Running an ASGI app (FastAPI) as the whole process, with uvicorn."""

from __future__ import annotations

import signal

import uvicorn
from fastapi import FastAPI


def _ignore(signum: int, frame: object) -> None:
    """The process is already shutting down cleanly; nothing is left to do on the signal."""


def run_http_service(app: FastAPI, host: str, port: int) -> None:
    """Serve `app` until SIGTERM or SIGINT, then shut down gracefully and exit 0.

    uvicorn shuts down gracefully on those signals, then restores the handlers it found and
    raises the signal again for them. With the default handlers a clean shutdown would end as
    "killed by SIGTERM" (or with a KeyboardInterrupt traceback); with these it exits 0, like the
    worker processes.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    # log_config=None: uvicorn's loggers propagate to the handler configure_logging installed.
    uvicorn.run(app, host=host, port=port, log_config=None)
