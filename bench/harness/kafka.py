"""The connection options of a bench or test Kafka client: `client_options`
(services/common/kafka.py) for a given bootstrap address, logged in as the environment says
(scripts/with_env.sh exports the admin principal for the broker the scripts run)."""

from __future__ import annotations

from typing import Any

from services.common.kafka import client_options
from services.common.settings import Settings


def kafka_options(bootstrap: str) -> dict[str, Any]:
    return client_options(Settings(kafka_bootstrap_servers=bootstrap))
