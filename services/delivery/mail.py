"""One send as the bytes handed to SMTP: merge fields applied (core.render), a Message-ID derived
from the send id, UTF-8 quoted-printable body (or, when the message has a text and an HTML part,
multipart/alternative: text/plain then text/html, each UTF-8 quoted-printable). Built directly
rather than through email.message.EmailMessage, whose header parsing costs more CPU than the
SMTP conversation (measured: about 0.8 ms per mail against 0.3 ms); the headers it writes are
checked by parsing them back with the standard library in tests/delivery/test_mail.py.

Headers (docs/delivery.md, "Headers"):

* no header is ever written with a line break or another control character in its value,
  whatever the builder is given (a merge value brought into the subject, a stored record from
  before the input rules): :class:`UnsafeHeaderError` is raised instead, and the send fails;
* every header is folded to RFC 5322 / RFC 2047 limits: encoded words of at most 75 characters,
  lines of at most 78 characters where a header can be folded, never more than 998 (an address
  is the only thing that cannot be folded, and it is at most 254 characters);
* addresses: a domain goes as its A-label (punycode) when the local part is ASCII, so such a mail
  needs nothing of the server; a non-ASCII local part (zoë@example.org) can only travel with
  SMTPUTF8 (RFC 6531), the address is then written as given, in UTF-8, and ``Mail.smtputf8``
  says the conversation needs the extension.

Two parts (docs/delivery.md, "Text and HTML parts"): the boundary is ``=_mailctl_`` and the send
id's hex, so it is the same for every attempt of a send, and it cannot occur in a part: quoted-
printable writes every ``=`` of the content as ``=3D``, so no encoded line can hold ``--=_``.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from email.utils import formatdate
from uuid import UUID

from core.render import render
from schemas import Contact, Content
from schemas.text import first_unsafe
from schemas.values import ascii_domain

__all__ = [
    "MAX_ENCODED_WORD",
    "MAX_LINE",
    "Mail",
    "MailAddressError",
    "UnsafeHeaderError",
    "compose",
    "fold_phrase",
    "fold_unstructured",
    "message_id_header",
    "wire_address",
]

#: RFC 5322 2.1.1: lines SHOULD be at most 78 characters (without CRLF), MUST be at most 998.
MAX_LINE = 78
#: RFC 2047 2: an encoded word is at most 75 characters.
MAX_ENCODED_WORD = 75
_PREFIX = "=?utf-8?b?"
_WORD_OVERHEAD = len(_PREFIX) + len("?=")
# A display name that can be written as it is: atext and spaces, and no "=?" that a reader
# could take for an encoded word.
_ATOMS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_TOKENS = re.compile(r" *[^ ]+ *$| *[^ ]+")


class UnsafeHeaderError(ValueError):
    """Raised when a header value holds a line break or another control character."""


class MailAddressError(ValueError):
    """Raised when an address cannot be written in a mail (its domain is no valid IDN)."""


@dataclass(frozen=True, slots=True)
class Mail:
    """What SMTP is given: the envelope and the message. ``smtputf8``: an address has a non-ASCII
    local part, so the server must offer SMTPUTF8 (the envelope and headers are UTF-8)."""

    mail_from: str
    rcpt_to: str
    data: bytes
    message_id: str
    smtputf8: bool = False


def message_id_header(send_id: UUID, domain: str) -> str:
    """The Message-ID of a send: the same for every attempt, so a receiving system (and the sink)
    can recognise a second copy, and an operator can find the ledger row from a mail."""
    return f"<{send_id}@{domain}>"


def _checked(name: str, value: str) -> str:
    reason = first_unsafe(value, multiline=False)
    if reason is not None:
        raise UnsafeHeaderError(f"the {name} header is refused: its value {reason}")
    return value


def wire_address(address: str) -> str:
    """An address as written in the envelope and the headers: with an ASCII local part, the
    domain as its A-label (ASCII all through); with a non-ASCII one, as given (SMTPUTF8 only)."""
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return address
    ascii_form = ascii_domain(domain)
    if ascii_form is None:
        raise MailAddressError(f"{address!r} has no valid internationalized domain")
    return f"{local}@{ascii_form}"


def _encoded_words(text: str, first_room: int) -> list[str]:
    """``text`` as RFC 2047 "B" encoded words: the first at most ``first_room`` characters, the
    others at most 75; a word never splits a character's UTF-8 bytes (each decodes alone)."""
    data = text.encode()
    words: list[str] = []
    room = first_room
    start = 0
    while start < len(data):
        # The most bytes whose base64 fits: 4 characters per 3 bytes, after the overhead.
        cap = max(3, (room - _WORD_OVERHEAD) // 4 * 3)
        end = min(start + cap, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1  # back to the first byte of a character
        words.append(f"{_PREFIX}{binascii.b2a_base64(data[start:end], newline=False).decode()}?=")
        start = end
        room = MAX_ENCODED_WORD
    return words


def _fold_words(head: str, words: list[str]) -> str:
    """``head`` then ``words`` (each a token with its leading space, the first without), folded
    before a word whenever the line would pass 78 characters."""
    lines: list[str] = []
    line = head + words[0]
    for word in words[1:]:
        if len(line) + len(word) > MAX_LINE:
            lines.append(line)
            line = word
        else:
            line += word
    lines.append(line)
    return "\r\n".join(lines)


def fold_unstructured(name: str, value: str) -> str:
    """The header ``name: value`` (unstructured, as Subject), folded, without the final CRLF.

    ASCII text is folded at its spaces when every word fits a line; otherwise (non-ASCII, a word
    too long to fit, a ``=?`` a reader could decode, a space at either end) the whole value is
    encoded words."""
    _checked(name, value)
    head = f"{name}: "
    # Spaces at either end would be read as folding, not text: such a value is encoded too.
    if value.isascii() and "=?" not in value and value.strip(" ") == value:
        if len(head) + len(value) <= MAX_LINE:
            return head + value
        tokens = _TOKENS.findall(value)
        if tokens:
            folded = _fold_words(head, tokens)
            if all(len(line) <= MAX_LINE for line in folded.split("\r\n")):
                return folded
    words = _encoded_words(value, MAX_LINE - len(head))
    return _fold_words(head, [words[0], *(" " + w for w in words[1:])])


def fold_phrase(name: str, display: str | None, address: str) -> str:
    """An address header (``From: Name <address>``), folded, without the final CRLF. A display
    name of plain words is written as it is when the header fits a line, else as encoded words
    (which fold, and need no quoting)."""
    _checked(name, address)
    head = f"{name}: "
    if not display:
        return head + address
    _checked(name, display)
    if _ATOMS.match(display) and "=?" not in display:
        line = f"{head}{display} <{address}>"
        if len(line) <= MAX_LINE:
            return line
    words = _encoded_words(display, MAX_LINE - len(head))
    return _fold_words(head, [words[0], *(" " + w for w in words[1:]), f" <{address}>"])


_QP = b"; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
_PLAIN = b"Content-Type: text/plain" + _QP
_HTML = b"Content-Type: text/html" + _QP


def _qp(text: str) -> bytes:
    """A part's content, UTF-8 quoted-printable, every line ending (CRLF, LF, a lone CR) one
    CRLF: a bare CR never reaches DATA."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return binascii.b2a_qp(text.encode(), istext=True).replace(b"\n", b"\r\n")


def compose(
    *, send_id: UUID, message_id: UUID, content: Content, contact: Contact, domain: str
) -> Mail:
    """The mail of one send. Raises :class:`UnsafeHeaderError` or :class:`MailAddressError` when
    it cannot be written safely (the send then fails with that reason)."""
    rendered = render(content, contact)
    mid = message_id_header(send_id, domain)
    sender = wire_address(content.from_address)
    rcpt = wire_address(contact.email)
    if rendered.text is not None and rendered.html is not None:
        boundary = f"=_mailctl_{send_id.hex}"
        content_headers = f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'
        delimiter = f"--{boundary}\r\n".encode()
        body = (
            b"This is a multi-part message in MIME format.\r\n"
            + delimiter
            + _PLAIN
            + _qp(rendered.text)
            + b"\r\n"
            + delimiter
            + _HTML
            + _qp(rendered.html)
            + f"\r\n--{boundary}--\r\n".encode()
        )
    else:
        single = _HTML if rendered.text is None else _PLAIN
        content_headers = single[: -len(b"\r\n")].decode()
        body = _qp(rendered.body)
    head = (
        f"{fold_phrase('From', content.from_name, sender)}\r\n"
        f"{fold_phrase('To', None, rcpt)}\r\n"
        f"{fold_unstructured('Subject', rendered.subject)}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        f"Message-ID: {_checked('Message-ID', mid)}\r\n"
        "MIME-Version: 1.0\r\n"
        f"{content_headers}"
        f"X-Mailctl-Message: {message_id}\r\n"
        f"X-Mailctl-Send: {send_id}\r\n"
        "\r\n"
    )
    return Mail(
        mail_from=sender,
        rcpt_to=rcpt,
        data=head.encode() + body,
        message_id=mid,
        smtputf8=not (sender.isascii() and rcpt.isascii()),
    )
