"""The connection options of a test's Kafka client: `client_options` (services/common/kafka.py)
for a given bootstrap address, logged in as the environment says (scripts/with_env.sh exports the
admin principal for the broker the scripts run)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from services.common.kafka import client_options
from services.common.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def kafka_options(bootstrap: str) -> dict[str, Any]:
    return client_options(Settings(kafka_bootstrap_servers=bootstrap))


def service_password(name: str) -> str:
    """The dev password scripts/kafka.sh generated for a service principal."""
    out = subprocess.run(
        ["bash", "scripts/kafka.sh", "password", name],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    password = out.stdout.strip()
    assert password, f"no dev password for {name}"
    return password
