"""The shape of the project's administration commands (API keys, operators, integrators): one
`python -m ...` program of subcommands, each run over one Postgres connection with the schema
brought up to date first (a CLI may run before any service has started), its domain errors
reported as usage errors (exit 2, one line), its credentials kept owner-only.

Each CLI declares its subcommands and their handlers; this module holds the rest once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from services.common.logs import configure_logging
from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations
from services.common.settings import Settings

__all__ = ["AdminCli", "Handler", "keep_secret", "kept_secret", "renewed", "reported"]

#: A subcommand: its work over the migrated connection; returns the exit status.
Handler = Callable[[asyncpg.Connection, argparse.Namespace, Settings], Awaitable[int]]


def keep_secret(secret: str, path: Path) -> None:
    """Write a development credential `make run` prints again next time, readable by its owner
    only (it is a live credential)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")


def kept_secret(path: Path) -> str | None:
    """The credential :func:`keep_secret` wrote there, or None."""
    return path.read_text().strip() if path.exists() else None


async def renewed(path: Path, make: Callable[[str | None], Awaitable[str]]) -> str:
    """The development credential `make run` prints: `make(kept)` answers the one kept in
    `path` while it still works, else a new one, which is kept for next time."""
    kept = kept_secret(path)
    found = await make(kept)
    if found != kept:
        keep_secret(found, path)
    return found


def reported(done: bool, said: str, missing: str) -> int:
    """The answer of a subcommand that changes one thing: `said` on stdout, or `missing` on
    stderr and exit status 1 when there was nothing to change."""
    if not done:
        print(missing, file=sys.stderr)
        return 1
    print(said)
    return 0


class AdminCli:
    """Subcommands over one migrated Postgres connection.

    `errors` are the domain errors (an invalid account id, a weak password ...) that end the
    program as a usage error; `log_name` configures structlog to stderr under that name (stdout
    is the answer, read by scripts such as the `make run` banner).
    """

    def __init__(
        self,
        prog: str,
        *,
        errors: tuple[type[Exception], ...],
        log_name: str | None = None,
    ) -> None:
        self.parser = argparse.ArgumentParser(prog=prog)
        self._sub = self.parser.add_subparsers(dest="command", required=True)
        self._handlers: dict[str, Handler] = {}
        self.errors = errors
        self.log_name = log_name

    def command(self, name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        """Declare subcommand `name`; returns its parser, for its arguments."""
        self._handlers[name] = handler
        parser: argparse.ArgumentParser = self._sub.add_parser(name, help=help)
        return parser

    def main(self, argv: list[str] | None = None) -> int:
        args = self.parser.parse_args(argv)
        settings = Settings()
        if self.log_name is not None:
            configure_logging(
                self.log_name, level=settings.log_level, fmt=settings.log_format, stream=sys.stderr
            )
        try:
            return asyncio.run(self._run(args, settings))
        except self.errors as exc:
            self.parser.error(str(exc))

    async def _run(self, args: argparse.Namespace, settings: Settings) -> int:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await apply_migrations(conn, load_migrations(MIGRATIONS_DIR))
            return await self._handlers[args.command](conn, args, settings)
        finally:
            await conn.close()
