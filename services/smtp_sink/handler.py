"""The SMTP side of the sink: an aiosmtpd handler that records every accepted mail, and refuses
the recipients its failure rules name, so the delivery worker's tests can meet both kinds of
refusal from a real SMTP conversation.

It can also be slow on purpose: after recording a mail it waits before its 250 reply, for every
mail (`SMTP_SINK_DATA_DELAY_S`) or for senders matching a pattern (set at run time through the
HTTP API, `PUT /slow`), so a test can build a backlog of released sends behind a slow server.
"""

from __future__ import annotations

import asyncio
from fnmatch import fnmatchcase
from typing import Any

import structlog

from services.smtp_sink.store import SinkStore

log = structlog.get_logger(__name__)

PERMANENT_REPLY = "550 5.1.1 <{rcpt}>: mailbox unavailable (sink rule: permanent failure)"
TOO_MANY_ERRORS_REPLY = "421 4.7.0 mailctl-smtp-sink Error: too many errors"
TRANSIENT_REPLY = "451 4.3.0 <{rcpt}>: try again later (sink rule: transient failure)"


class SinkHandler:
    """aiosmtpd handler: hooks are looked up by name (handle_RCPT, handle_DATA)."""

    def __init__(
        self,
        store: SinkStore,
        *,
        fail_permanent: tuple[str, ...] = (),
        fail_transient: tuple[str, ...] = (),
        data_delay_s: float = 0.0,
        error_limit: int = 0,
    ) -> None:
        self.store = store
        self.error_limit = error_limit
        # Refused recipients per session (by the session object's id; sessions end with their
        # connection, and a new connection's session starts at 0).
        self._errors: dict[int, int] = {}
        self.fail_permanent = tuple(p.lower() for p in fail_permanent)
        self.fail_transient = tuple(p.lower() for p in fail_transient)
        self.data_delay_s = data_delay_s
        # Sender pattern -> seconds to wait after recording a mail, before the 250.
        self.slow: dict[str, float] = {}

    def delay_for(self, mail_from: str) -> float:
        """How long the reply to DATA waits for a mail from `mail_from`."""
        sender = mail_from.lower()
        for pattern, delay in self.slow.items():
            if fnmatchcase(sender, pattern):
                return delay
        return self.data_delay_s

    def set_slow(self, pattern: str, delay_s: float) -> None:
        """Delay the 250 to DATA by `delay_s` for senders matching `pattern` (0: no longer)."""
        if delay_s > 0:
            self.slow[pattern.lower()] = delay_s
        else:
            self.slow.pop(pattern.lower(), None)

    def refusal_for(self, rcpt: str) -> str | None:
        """The SMTP reply refusing `rcpt`, or None when the sink accepts it."""
        address = rcpt.lower()
        if any(fnmatchcase(address, p) for p in self.fail_permanent):
            return PERMANENT_REPLY.format(rcpt=rcpt)
        if any(fnmatchcase(address, p) for p in self.fail_transient):
            return TRANSIENT_REPLY.format(rcpt=rcpt)
        return None

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.error_limit and self._errors.get(id(session), 0) >= self.error_limit:
            # Like Postfix past smtpd_hard_error_limit: 421, and the session is dropped.
            self._errors.pop(id(session), None)
            asyncio.get_running_loop().call_soon(server.transport.close)
            log.info("session dropped after too many errors", limit=self.error_limit)
            return TOO_MANY_ERRORS_REPLY
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.refusal_for(address)
        if reply is not None:
            self.store.record_refusal(
                mail_from=envelope.mail_from, rcpt=address, code=int(reply[:3]), reply=reply
            )
            log.info("recipient refused", rcpt=address, code=int(reply[:3]))
            self._errors[id(session)] = self._errors.get(id(session), 0) + 1
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", errors="surrogateescape")
        peer = session.peer
        # Committed before the 250 goes out: an accepted mail is never missing from the record.
        row = self.store.record(
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None,
            mail_from=envelope.mail_from or "",
            rcpts=list(envelope.rcpt_tos),
            raw=raw,
        )
        log.debug("mail recorded", row=row, rcpts=len(envelope.rcpt_tos))
        delay = self.delay_for(envelope.mail_from or "")
        if delay > 0:
            # A slow server: the mail is taken (recorded), the answer comes late.
            await asyncio.sleep(delay)
        return f"250 2.0.0 Ok: recorded as {row}"
