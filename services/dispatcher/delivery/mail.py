"""One send as the bytes handed to SMTP: merge fields applied (core.render), a Message-ID derived
from the send id, UTF-8 quoted-printable body. Built directly rather than through
email.message.EmailMessage, whose header parsing costs more CPU than the SMTP conversation
(measured: about 0.8 ms per mail against 0.3 ms); the headers it writes are checked by parsing
them back with the standard library in tests/delivery/test_mail.py.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate
from uuid import UUID

from core.render import render
from schemas import Contact, Content

__all__ = ["Mail", "compose", "message_id_header"]


@dataclass(frozen=True, slots=True)
class Mail:
    """What SMTP is given: the envelope and the message."""

    mail_from: str
    rcpt_to: str
    data: bytes
    message_id: str


def message_id_header(send_id: UUID, domain: str) -> str:
    """The Message-ID of a send: the same for every attempt, so a receiving system (and the sink)
    can recognise a second copy, and an operator can find the ledger row from a mail."""
    return f"<{send_id}@{domain}>"


def _header_text(value: str) -> str:
    # RFC 2047 only when needed: ASCII subjects stay readable in the raw message.
    if value.isascii():
        return value
    return Header(value, "utf-8").encode()


def compose(
    *, send_id: UUID, message_id: UUID, content: Content, contact: Contact, domain: str
) -> Mail:
    rendered = render(content, contact)
    mid = message_id_header(send_id, domain)
    sender = (
        formataddr((content.from_name, content.from_address), charset="utf-8")
        if content.from_name
        else content.from_address
    )
    subtype = "html" if rendered.html else "plain"
    head = (
        f"From: {sender}\r\n"
        f"To: {contact.email}\r\n"
        f"Subject: {_header_text(rendered.subject)}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        f"Message-ID: {mid}\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: text/{subtype}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        f"X-Mailctl-Message: {message_id}\r\n"
        f"X-Mailctl-Send: {send_id}\r\n"
        "\r\n"
    )
    body = binascii.b2a_qp(rendered.body.replace("\r\n", "\n").encode(), istext=True)
    return Mail(
        mail_from=content.from_address,
        rcpt_to=contact.email,
        data=head.encode() + body.replace(b"\n", b"\r\n"),
        message_id=mid,
    )
