"""The servers a benchmark runs against, from the environment `scripts/with_env.sh` exports (the
defaults are the scripts' default ports)."""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = ["Servers", "servers"]


class Servers(NamedTuple):
    bootstrap: str
    database_url: str
    smtp: tuple[str, int]
    sink_url: str


def servers() -> Servers:
    return Servers(
        os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
        os.environ.get("DATABASE_URL", "postgresql://mailctl:mailctl@127.0.0.1:15432/mailctl"),
        (os.environ.get("SMTP_HOST", "127.0.0.1"), int(os.environ.get("SMTP_PORT", "10025"))),
        os.environ.get("SMTP_SINK_URL", "http://127.0.0.1:18025"),
    )
