"""How every Kafka client of the service connects: the one place that turns settings into
aiokafka's connection options (docs/kafka.md, "Authentication and ACLs").

Every `AIOKafkaProducer`, `AIOKafkaConsumer` and `AIOKafkaAdminClient` in services/, tests/ and
bench/ is built with `**client_options(settings)`, so a broker that requires SASL/SCRAM (the one
scripts/kafka.sh runs) or TLS is reached the same way by all of them, with the principal the
process was given.
"""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from services.common.settings import Settings


class KafkaSettingsError(ValueError):
    """Raised when the Kafka security settings cannot work together (SASL without a user...)."""


def client_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments that connect an aiokafka client as this process's principal."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol.startswith("SASL_"):
        if not settings.kafka_username or settings.kafka_password is None:
            raise KafkaSettingsError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_USERNAME and KAFKA_PASSWORD"
            )
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_username,
            sasl_plain_password=settings.kafka_password.get_secret_value(),
        )
    if protocol.endswith("SSL"):
        cafile = settings.kafka_ssl_cafile
        options["ssl_context"] = create_ssl_context(cafile=str(cafile) if cafile else None)
    return options
