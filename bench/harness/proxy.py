"""A TCP proxy a test can cut and restore: a server made unreachable for one process only.

A worker given the proxy's address instead of the server's sees the server fail when the proxy
is cut (every open connection reset, new ones refused: what a stopped Postgres looks like to a
client) and come back when it is restored, while every other test and process keeps using the
real server. Used by tests/integration/test_delivery_outage.py.
"""

from __future__ import annotations

import asyncio
import contextlib

from bench.harness.processor import free_port


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (again) on the same port and forward every connection to the target."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._connected, self.host, self.port, reuse_address=True
            )

    async def cut(self) -> None:
        """Stop listening (new connections are refused) and reset every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(Exception):
                transport.abort()
        self._writers.clear()
        for task in list(self._pipes):
            task.cancel()
        for task in list(self._pipes):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pipes.clear()
        if server is not None:
            await server.wait_closed()

    async def close(self) -> None:
        await self.cut()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(sink)
            with contextlib.suppress(Exception):
                sink.close()
