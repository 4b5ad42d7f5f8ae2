"""Kafka credentials for tests: the connection options of a client (`kafka_options`, shared with
bench/ in bench/harness/kafka.py) and the dev passwords of the service principals."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.harness.kafka import kafka_options

__all__ = ["kafka_options", "service_password"]

REPO_ROOT = Path(__file__).resolve().parents[2]


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
