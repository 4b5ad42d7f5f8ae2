"""How the HTTP services are served (services/common/http.py)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from services.common import http


def test_idle_connections_outlast_the_clients_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    # uvicorn's own 5 s would close pooled connections that clients and load balancers keep
    # for up to 60 s, and their next request would meet a closing socket.
    seen: dict[str, Any] = {}
    monkeypatch.setattr(http.uvicorn, "run", lambda app, **options: seen.update(options))
    # The test process keeps its own signal handlers.
    handled: list[int] = []
    monkeypatch.setattr(http.signal, "signal", lambda sig, handler: handled.append(sig))
    http.run_http_service(FastAPI(), "127.0.0.1", 0, fast=True)
    assert seen["timeout_keep_alive"] > 60
    assert seen["loop"] == "uvloop" and seen["http"] == "httptools"
    http.run_http_service(FastAPI(), "127.0.0.1", 0)
    assert seen["timeout_keep_alive"] > 60
    assert seen["loop"] == "asyncio" and seen["access_log"] is True
    assert set(handled) == {http.signal.SIGTERM, http.signal.SIGINT}
