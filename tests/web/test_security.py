"""Sign-in lockout (pure) and the headers and offline /docs of the service (no server)."""

from __future__ import annotations

from datetime import timedelta

import httpx

from services.commands.app import Adapters, create_app
from services.common.settings import Settings
from services.web.operators import hash_password, verify_password
from services.web.sessions import lockout
from tests.commands.fakes import FakeBus, FakeKeys, FakeStore


def test_no_lockout_below_the_threshold_then_a_growing_capped_one() -> None:
    assert [lockout(n, 5) for n in range(5)] == [None] * 5
    assert lockout(5, 5) == timedelta(seconds=30)
    assert lockout(6, 5) == timedelta(minutes=1)
    assert lockout(7, 5) == timedelta(minutes=2)
    assert lockout(50, 5) == timedelta(minutes=15)


def test_passwords_are_argon2id_hashes_that_verify() -> None:
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse battery staple")
    assert not verify_password(stored, "Correct horse battery staple")
    assert not verify_password(None, "anything")  # unknown operator
    assert not verify_password("not a hash", "anything")


async def test_every_answer_has_the_security_headers_and_docs_need_no_cdn() -> None:
    app = create_app(Settings(), Adapters(bus=FakeBus(), store=FakeStore(), keys=FakeKeys({})))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        docs = await client.get("/docs")
        script = await client.get("/static/vendor/swagger-ui-bundle-5.18.2.js")
        htmx = await client.get("/static/vendor/htmx-2.0.4.min.js")
        health = await client.get("/v1/whoami")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    assert "/static/vendor/swagger-ui-bundle-5.18.2.js" in docs.text
    assert "<script>" not in docs.text  # no inline script: the init is a file
    assert script.status_code == 200 and htmx.status_code == 200
    for answer in (docs, health):
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
