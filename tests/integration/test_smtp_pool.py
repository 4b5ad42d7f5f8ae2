"""The SMTP pool against a real SMTP server (the project's sink, in-process, with its Postfix-like
error limit): a session the server drops after too many errors is reconnected without spending a
retry attempt, and pooled connections are recycled after a bounded age."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.harness.processor import free_port
from services.common.settings import Settings
from services.delivery.mail import Mail
from services.delivery.smtp import SmtpPool
from services.smtp_sink.app import SinkRuntime


def mail(rcpt: str, n: int) -> Mail:
    data = (
        f"From: news@example.org\r\nTo: {rcpt}\r\nSubject: {n}\r\n"
        f"Message-ID: <{n}@mailctl.invalid>\r\n\r\nHello\r\n"
    ).encode()
    return Mail(
        mail_from="news@example.org", rcpt_to=rcpt, data=data, message_id=f"<{n}@mailctl.invalid>"
    )


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SinkRuntime]:
    runtime = SinkRuntime()
    await runtime.start(
        Settings(
            smtp_port=free_port(),
            smtp_sink_db=tmp_path / "sink.sqlite3",
            smtp_sink_error_limit=1,
        )
    )
    try:
        yield runtime
    finally:
        await runtime.close()


def port_of(runtime: SinkRuntime) -> int:
    port: int = runtime.server.sockets[0].getsockname()[1]
    return port


async def test_a_session_dropped_after_too_many_errors_is_reconnected_without_a_retry(
    sink: SinkRuntime,
) -> None:
    pool = SmtpPool("127.0.0.1", port_of(sink), size=1, timeout=10.0)
    try:
        refused = await pool.deliver(mail("a@fail-permanent.test", 1))
        # The sink now answers this session's next MAIL with 421 and drops it (like Postfix
        # past smtpd_hard_error_limit): the pool opens a new session for the same hand-off.
        after = await pool.deliver(mail("b@example.org", 2))
    finally:
        await pool.close()

    assert refused.verdict == "failed" and refused.detail.startswith("550")
    assert after.verdict == "delivered", after
    assert [m.rcpts for m in sink.store.find(limit=10)[0]] == [["b@example.org"]]


async def test_pooled_connections_are_recycled_after_their_age(sink: SinkRuntime) -> None:
    young = SmtpPool("127.0.0.1", port_of(sink), size=1, timeout=10.0, max_age_s=3600.0)
    old = SmtpPool("127.0.0.1", port_of(sink), size=1, timeout=10.0, max_age_s=0.0)
    try:
        for n in range(2):
            assert (await young.deliver(mail("y@example.org", n))).verdict == "delivered"
        for n in range(2, 4):
            assert (await old.deliver(mail("o@example.org", n))).verdict == "delivered"
    finally:
        await young.close()
        await old.close()

    peers: dict[str, set[str | None]] = {}
    for m in sink.store.find(limit=10)[0]:
        peers.setdefault(m.rcpts[0], set()).add(m.peer)
    assert len(peers["y@example.org"]) == 1  # one connection served both
    assert len(peers["o@example.org"]) == 2  # a new connection for each: recycled
