"""Process settings, read from the environment (pydantic-settings).

The variable names are the ones the scripts and tests use (DATABASE_URL, SMTP_HOST, ...); the
defaults are the project's own loopback ports from scripts/lib.sh, so a process started on a
developer machine finds the servers that `make up` started without any configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Every setting a service process reads. Field names map to upper-case env names."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # The servers.
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    # How every Kafka client of the process authenticates (services/common/kafka.py,
    # docs/kafka.md). PLAINTEXT (none) is the default for a Kafka named by the environment; the
    # broker the scripts start requires SASL_PLAINTEXT with SCRAM, and the scripts export each
    # process's principal (scripts/lib.sh).
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-256"
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    # The CA bundle that signs the brokers' certificates (SSL, SASL_SSL); unset: the system's.
    kafka_ssl_cafile: Path | None = None
    database_url: str = "postgresql://mailctl:mailctl@127.0.0.1:15432/mailctl"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 10025
    smtp_sink_url: str = "http://127.0.0.1:18025"

    # Topics: `<prefix>.commands`, `<prefix>.events`, ... (docs/architecture.md). Tests use a
    # prefix of their own so that runs never share topics, consumer groups or transactional ids.
    topic_prefix: str = "mailctl"
    # The partition count of every topic: commands, events, results and sends are co-partitioned.
    kafka_partitions: int = 4
    # The replication factor of the topics the services create (ensure_topics, the intake
    # topics): 1 for the one-node broker of the scripts, 3 on a cluster such as
    # scripts/kafka_cluster.sh (whose brokers set min.insync.replicas=2; docs/kafka.md).
    kafka_replication_factor: int = 1
    # The largest record a producer sends and a topic accepts (a chunk of 10,000 contacts with
    # merge attributes can pass Kafka's 1 MB default).
    max_record_bytes: int = 8 * 1024 * 1024
    # The clock: one tick per partition per interval, written to the commands topic.
    tick_interval_s: float = 1.0
    # Off only for replays and simulated-time tests, whose ticks come from the log itself.
    clock_enabled: bool = True
    # Whose clock stamps a record of the commands topic, hence the instant the processor decides
    # the command at (docs/dispatcher.md, "Time is the service's"). LogAppendTime: the broker's,
    # the service's own. CreateTime only for replays and simulated-time tests: the topic keeps the
    # timestamps its producer copied from the original log (or the scenario's instants).
    kafka_commands_timestamp_type: Literal["LogAppendTime", "CreateTime"] = "LogAppendTime"
    # The intake relay of the dispatcher process (services/dispatcher/intake.py): integrating
    # services' commands from their intake topics, checked against their granted accounts.
    intake_enabled: bool = True
    # Kafka static membership (group.instance.id) of this dispatcher process: a restarted process
    # with the same id gets its partitions back at once instead of after the session timeout.
    # Must be unique per process; unset means dynamic membership (docs/dispatcher.md).
    dispatcher_instance_id: str | None = None
    # Snapshots of each owned partition's folded state (docs/scale.md): written under this
    # directory (one locked subdirectory per topic prefix and partition) at most every
    # snapshot_interval_s (and at most a tenth of the time: the processor's
    # SNAPSHOT_WAIT_PER_COST), once snapshot_min_events events were folded since the last one; a
    # new owner on this host folds only what follows the newest valid one. Unset: no snapshots.
    dispatcher_state_dir: Path | None = None
    snapshot_interval_s: float = 10.0
    snapshot_min_events: int = 1
    # The consumer session timeout of the dispatcher, the delivery worker and the projections
    # worker: how long a process that died without leaving keeps its partitions.
    kafka_session_timeout_ms: int = 10_000

    # Delivery (docs/delivery.md): the overall SMTP rate of one worker process, its pool of SMTP
    # connections, the retries of transient (4xx) refusals, and the Message-ID domain.
    delivery_rate: float = 1000.0
    smtp_pool_size: int = 8
    smtp_timeout_s: float = 30.0
    # A pooled SMTP connection older than this is closed and opened anew before its next mail,
    # so a changed server configuration (or DNS) is picked up (docs/delivery.md).
    smtp_connection_max_age_s: float = 300.0
    delivery_retry_base_s: float = 2.0
    delivery_max_attempts: int = 5
    delivery_instance_id: str | None = None
    # Static membership of the projections worker (as the dispatcher's and the delivery
    # worker's): unique per process; unset means dynamic membership (docs/projections.md).
    projections_instance_id: str | None = None
    message_id_domain: str = "mailctl.invalid"
    # How long the API waits for a command's outcome before answering 202 with a URL to poll.
    command_wait_s: float = 5.0
    # The largest `wait_s` a read with `min_sequence` accepts (services/commands/read_api.py).
    read_max_wait_s: float = 30.0

    # Where the service processes listen. Loopback by default: nothing is exposed to the network
    # unless asked (docker-compose sets 0.0.0.0 inside its containers).
    bind_host: str = "127.0.0.1"
    commands_port: int = 8080
    dispatcher_health_port: int = 8081
    delivery_health_port: int = 8082
    projections_health_port: int = 8083

    # The SMTP sink (development and tests only).
    smtp_sink_http_port: int = 18025
    smtp_sink_db: Path = REPO_ROOT / ".state" / "smtp_sink" / "sink.sqlite3"
    # Comma-separated fnmatch patterns of recipient addresses the sink refuses at RCPT TO.
    smtp_sink_fail_permanent: str = "*@fail-permanent.test"
    smtp_sink_fail_transient: str = "*@fail-transient.test"
    # Whether the sink offers SMTPUTF8 (RFC 6531, internationalized addresses): on by default, off
    # to meet a server without it (a send to a non-ASCII local part then fails with the reason).
    smtp_sink_smtputf8: bool = True
    # Seconds the sink waits after recording a mail before its 250 (a slow server; tests).
    smtp_sink_data_delay_s: float = 0.0
    # Emulates Postfix's smtpd_hard_error_limit: after this many refused recipients in one
    # session the sink answers the next MAIL with 421 and drops the session (0: never).
    smtp_sink_error_limit: int = 0

    # Where `make run` keeps the development API key it prints (services.commands.apikeys).
    dev_api_key_file: Path = REPO_ROOT / ".state" / "dev-api-key"
    # Where `make run` keeps the password of the development operator (services.web.operators).
    dev_operator_file: Path = REPO_ROOT / ".state" / "dev-operator"

    # The web UI (docs/ui.md): how long a session lasts, and the sign-in lockout.
    ui_session_hours: float = 12.0
    ui_lockout_after: int = 5

    # Logging and health.
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    health_check_timeout: float = 3.0

    # Projections: the most rows one view transaction writes (services/projections/consumer.py).
    projections_max_batch_rows: int = 200_000


def split_patterns(value: str) -> tuple[str, ...]:
    """Turn a comma-separated setting into its non-empty, stripped parts."""
    return tuple(part.strip() for part in value.split(",") if part.strip())
