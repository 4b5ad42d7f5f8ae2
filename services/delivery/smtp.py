"""SMTP hand-off: a pool of aiosmtplib connections, an overall rate, and the one rule that decides
what an SMTP answer means for a send (docs/delivery.md):

* 250 to DATA: **delivered**;
* a 5xx reply to MAIL, RCPT or DATA: **failed** for good, with the reply as the reason;
* a 4xx reply, or a connection that fails before DATA is sent: **deferred** (the server did not
  take the mail, so trying again later cannot make a second copy);
* the connection lost or timed out after DATA began, before the reply: **unknown** (the server
  may have taken it; it is never sent again automatically);
* a mail that needs SMTPUTF8 (an address with a non-ASCII local part) to a server that does not
  offer it, or anything else that cannot be handed over before DATA: **failed**, with the reason
  (the server never saw the mail; asking again cannot change the answer). Nothing a single send
  brings raises out of the pool: any other error after DATA began is **unknown**;
* the message was paused or canceled (the fence) when a connection was ready, or before DATA:
  **returned** (nothing of it reached the server; the envelope is reset).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
import structlog

from services.delivery.mail import Mail

log = structlog.get_logger(__name__)

Verdict = Literal["delivered", "failed", "deferred", "unknown", "returned"]

#: Asked right before a mail is handed over: True when its message was paused or canceled.
Fence = Callable[[], bool]

FENCED = "not handed to SMTP: the message was paused or canceled first"

#: The reason a mail that needs SMTPUTF8 fails at a server without it.
NO_SMTPUTF8 = (
    "the mail server does not offer SMTPUTF8, which an internationalized address "
    "(a non-ASCII local part) needs"
)


@dataclass(frozen=True, slots=True)
class Answer:
    """What became of one hand-off, and the transport's words for it."""

    verdict: Verdict
    detail: str


def _refusal(error: aiosmtplib.SMTPResponseException) -> Answer:
    text = f"{error.code} {error.message}".strip()
    if 400 <= error.code < 500:
        return Answer("deferred", text)
    if 500 <= error.code < 600:
        return Answer("failed", text)
    # Any other code where a 250 was due: the server did not take the mail; ask again later.
    return Answer("deferred", f"unexpected reply {text}")


class RateLimiter:
    """At most `rate` hand-offs per second overall: each one reserves the next free instant."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def take(self, count: int = 1) -> None:
        if self.interval == 0.0 or count <= 0:
            return
        now = time.monotonic()
        start = max(self._next, now)
        self._next = start + count * self.interval
        # Wait until the first of the reserved slots; the rest follow within this batch, so a
        # batch of n goes out at the rate on average (bursting at most n at once).
        if start > now:
            await asyncio.sleep(start - now)


def _dropped(error: Exception) -> bool:
    """Whether an error at MAIL means the server ended the session, not refused the mail: a
    disconnect, or 421 (Postfix past its error limit, a server shutting down)."""
    if isinstance(error, aiosmtplib.SMTPServerDisconnected | ConnectionError):
        return True
    return isinstance(error, aiosmtplib.SMTPResponseException) and error.code == 421


class SmtpPool:
    """`size` SMTP connections, each used by one hand-off at a time, opened on demand.

    A connection that has served mails before and is found dropped at MAIL (the server closed
    the idle session, or ended it after too many errors, as Postfix does) is opened anew and the
    mail tried on it once more, within the same hand-off: the server never looked at the mail,
    so no retry attempt is spent. A connection older than `max_age_s` is closed before its next
    mail, so a changed server configuration is picked up."""

    def __init__(
        self, host: str, port: int, size: int, timeout: float, *, max_age_s: float = 300.0
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_age_s = max_age_s
        self._opened: dict[int, float] = {}  # id(client) -> when it connected (monotonic)
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(
                aiosmtplib.SMTP(hostname=host, port=port, timeout=timeout, start_tls=False)
            )

    async def deliver(self, mail: Mail, fence: Fence | None = None) -> Answer:
        client = await self._idle.get()
        try:
            # The fence, once a connection is ready (the wait for one may be long) and again
            # right before DATA: a pause or cancel that arrived meanwhile stops the hand-off.
            if fence is not None and fence():
                return Answer("returned", FENCED)
            reused = await self._ready(client)
            answer = await self._conversation(client, mail, fence, reconnect=reused)
            if answer is None:  # the reused session was gone: once more on a new one
                client.close()
                await self._ready(client)
                answer = await self._conversation(client, mail, fence, reconnect=False)
            assert answer is not None
            return answer
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            client.close()
            return Answer("deferred", f"before DATA: {type(error).__name__}: {error}")
        finally:
            self._idle.put_nowait(client)

    async def _conversation(
        self, client: aiosmtplib.SMTP, mail: Mail, fence: Fence | None, *, reconnect: bool
    ) -> Answer | None:
        """One mail on a ready connection; None when `reconnect` and the session turned out
        dropped at MAIL (nothing of the mail was taken)."""
        try:
            if mail.smtputf8 and not client.supports_extension("smtputf8"):
                # Nothing was sent for this mail: the connection stays usable as it is.
                return Answer("failed", NO_SMTPUTF8)
            options = ["SMTPUTF8"] if mail.smtputf8 else []
            encoding = "utf-8" if mail.smtputf8 else "ascii"
            try:
                await client.mail(mail.mail_from, options=options, encoding=encoding)
            except (aiosmtplib.SMTPException, OSError) as error:
                if reconnect and _dropped(error):
                    log.info("smtp session dropped by the server: reconnecting", error=str(error))
                    return None
                raise
            await client.rcpt(mail.rcpt_to, encoding=encoding)
        except aiosmtplib.SMTPResponseException as error:
            await self._reset(client)
            return _refusal(error)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            # Nothing of the message was sent: the server cannot have taken it.
            client.close()
            return Answer("deferred", f"before DATA: {type(error).__name__}: {error}")
        except Exception as error:  # one send's fault must not end the worker
            # Something of this mail could not be written to the conversation (an address that
            # does not encode...): the server has not got the mail, and a retry would fail alike.
            client.close()
            return Answer("failed", f"cannot be handed to SMTP: {type(error).__name__}: {error}")
        if fence is not None and fence():
            await self._reset(client)
            return Answer("returned", FENCED)
        try:
            response = await client.data(mail.data)
        except aiosmtplib.SMTPResponseException as error:
            await self._reset(client)
            return _refusal(error)
        except Exception as error:  # DATA began: the server may have the mail
            client.close()
            return Answer("unknown", f"during DATA: {type(error).__name__}: {error}")
        return Answer("delivered", f"{response.code} {response.message}".strip())

    async def _ready(self, client: aiosmtplib.SMTP) -> bool:
        """Connect (anew when older than max_age_s) and greet; True when the connection was
        already open, i.e. it may have been dropped by the server while idle."""
        opened = self._opened.get(id(client))
        if (
            client.is_connected
            and opened is not None
            and time.monotonic() - opened >= self.max_age_s
        ):
            await self._retire(client)
        reused = client.is_connected
        if not client.is_connected:
            await client.connect()
            self._opened[id(client)] = time.monotonic()
        if client.is_ehlo_or_helo_needed:
            # The server's extensions (SMTPUTF8) are known only after EHLO; aiosmtplib would
            # send it lazily at MAIL, too late to decide the MAIL command's options.
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
        return reused

    async def _retire(self, client: aiosmtplib.SMTP) -> None:
        """Close an old connection politely (QUIT), or at once if the server does not answer."""
        try:
            await asyncio.wait_for(client.quit(), 2.0)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        # After a refusal the envelope must be reset before the connection is used again.
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                try:
                    await asyncio.wait_for(client.quit(), 2.0)
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    client.close()
