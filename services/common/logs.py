"""structlog configuration shared by every process: call `configure_logging` once at start.

Everything goes through one stdlib handler on stdout, so the lines of the libraries (uvicorn,
aiokafka, asyncpg, aiosmtpd) come out in the same format as ours: JSON lines when stdout is not
a terminal (the scripts redirect it to .state/logs/<name>.log), a readable console otherwise.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]


def configure_logging(
    service: str, *, level: str = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to `stream` (default stdout), one line per event, tagged
    with `service`. Command-line tools pass stderr: their stdout is their output."""
    out = sys.stdout if stream is None else stream

    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    json_lines = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Processor] = [
        # Ids bound with bind_contextvars (message id, command type) land on every line.
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_service,
    ]
    renderer: Processor
    if json_lines:
        # Tracebacks as structured data, without local variables: they bloat every error line
        # and may hold secrets (a DSN with its password).
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer()

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)

    def log_uncaught(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        # A crash must leave a parseable line in the log, not a bare traceback on stderr.
        structlog.get_logger("uncaught").critical("uncaught exception", exc_info=(kind, value, tb))

    sys.excepthook = log_uncaught
