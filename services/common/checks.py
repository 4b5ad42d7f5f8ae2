"""Real dependency checks for the health endpoints: each one talks to the server it names.

Each check keeps at most one connection open between calls, so a health poll every few seconds
costs one round trip, and drops it after a failure, so the next poll reconnects from scratch
(a restarted server is picked up without restarting the service).
"""

from __future__ import annotations

import asyncio
import contextlib

import aiosmtplib

# Neither library ships type information; `unused-ignore` keeps this line valid once the
# project's mypy overrides cover them.
import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from services.common.kafka import client_options
from services.common.settings import Settings


class DependencyError(Exception):
    """Raised when a dependency answers, but not with what a working one answers."""


class KafkaCheck:
    """Kafka is reachable: the broker answers a metadata request and lists at least one broker."""

    def __init__(self, settings: Settings, *, request_timeout_ms: int = 5000) -> None:
        self.settings = settings
        self.request_timeout_ms = request_timeout_ms
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> None:
        async with self._lock:
            try:
                if self._admin is None:
                    admin = AIOKafkaAdminClient(
                        **client_options(self.settings),
                        request_timeout_ms=self.request_timeout_ms,
                    )
                    self._admin = admin
                    await admin.start()
                cluster = await self._admin.describe_cluster()
                if not cluster.get("brokers"):
                    raise DependencyError("metadata lists no broker")
            except BaseException:
                # Includes the cancellation of a timed-out check: a half-open client is dropped.
                await self._drop()
                raise

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _drop(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            # The client is being thrown away either way; a failure to close changes nothing.
            with contextlib.suppress(Exception):
                await admin.close()


class PostgresCheck:
    """Postgres is reachable: `SELECT 1` answers 1 over a real connection."""

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> None:
        async with self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
                if await self._conn.fetchval("SELECT 1") != 1:
                    raise DependencyError("SELECT 1 did not answer 1")
            except BaseException:
                self._drop()
                raise

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and not conn.is_closed():
                await conn.close(timeout=2)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


class SmtpCheck:
    """The SMTP server is reachable: it greets, answers EHLO and NOOP with success codes.

    A fresh connection each time: an SMTP server may drop idle sessions, and this is what the
    delivery worker itself does before a send.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    async def __call__(self) -> None:
        smtp = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, timeout=self.timeout, start_tls=False
        )
        await smtp.connect()
        try:
            await smtp.ehlo()
            await smtp.noop()
        finally:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()
