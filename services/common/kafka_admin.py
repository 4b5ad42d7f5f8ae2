"""Who may do what on the service's topics: the principals, their ACLs, and the two admin
operations the project needs on a broker with authentication (docs/kafka.md, "Authentication
and ACLs"; docs/integrators.md).

* `service_acls(prefix)`: the ACLs of the four service principals. Only service principals may
  write `<prefix>.commands`; only the dispatcher may write `<prefix>.events`,
  `<prefix>.command-results` and `<prefix>.sends`.
* `integrator_acls(prefix, principal)`: an integrating service may write its own intake topic
  `<prefix>.intake.<principal>` and nothing else (the intake relay checks which accounts it may
  act for: services/dispatcher/intake.py), and read the results topic.
* `create_acls`, `upsert_scram_user`: CreateAcls and AlterUserScramCredentials, which aiokafka's
  admin client does not offer, sent through it (so with its connection and SASL login) as
  requests built from its own protocol classes. Run as a super user.

    python -m services.common.kafka_admin apply-service-acls   # scripts/kafka.sh, every start
    python -m services.common.kafka_admin upsert-scram-users < NAME-PASSWORD-LINES
        # docker-compose.yml's kafka-setup (the scripts create them when formatting)

Integrators are created with `python -m services.commands.integrators create` (which uses the
functions here and records the accounts they may act for).

Both read the connection from the environment like every process (services/common/kafka.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import secrets
import sys
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.admin import CreateAclsRequest_v1, DescribeAclsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from services.common.kafka import client_options
from services.common.settings import Settings
from services.common.topics import Topics, topic_configs

#: The service principals, one per kind of process (scripts/services.sh gives each its own).
API = "mailctl-api"
DISPATCHER = "mailctl-dispatcher"
DELIVERY = "mailctl-delivery"
PROJECTIONS = "mailctl-projections"
SERVICE_PRINCIPALS = (API, DISPATCHER, DELIVERY, PROJECTIONS)

#: SCRAM iterations for the credentials this module creates (Kafka's minimum is 4096).
SCRAM_ITERATIONS = 8192


class Resource(IntEnum):
    """Kafka's ResourceType ids."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Pattern(IntEnum):
    """Kafka's PatternType ids."""

    LITERAL = 3
    PREFIXED = 4


class Op(IntEnum):
    """Kafka's AclOperation ids (READ, WRITE... imply DESCRIBE)."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


ALLOW = 3  # Kafka's AclPermissionType ALLOW


class KafkaAdminError(Exception):
    """Raised when the broker refuses an ACL or a credential (with its error code and message)."""


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: `principal` may do `op` on the resource, from any host."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    op: Op


def _topic(principal: str, name: str, *ops: Op) -> list[Acl]:
    return [Acl(principal, Resource.TOPIC, name, Pattern.LITERAL, op) for op in ops]


def intake_topic(prefix: str, principal: str) -> str:
    """The one topic an integrating service may write: its commands, for the intake relay."""
    return Topics(prefix).intake(principal)


def service_acls(prefix: str) -> list[Acl]:
    """Every ACL of the service principals for the topics under `prefix`."""
    commands, events = f"{prefix}.commands", f"{prefix}.events"
    results, dead, sends = f"{prefix}.command-results", f"{prefix}.dead-letter", f"{prefix}.sends"
    control = f"{prefix}.control"
    acls: list[Acl] = []
    for principal in SERVICE_PRINCIPALS:
        # Every service process runs ensure_topics at start: it may create the service's
        # topics, read their layout and correct the commands topic's timestamp type.
        acls += [
            Acl(principal, Resource.TOPIC, f"{prefix}.", Pattern.PREFIXED, op)
            for op in (Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS)
        ]
        acls += [
            Acl(principal, Resource.CLUSTER, "kafka-cluster", Pattern.LITERAL, op)
            for op in (Op.DESCRIBE, Op.IDEMPOTENT_WRITE)
        ]
    # The API: publishes commands, reads their results.
    acls += _topic(API, commands, Op.WRITE)
    acls += _topic(API, results, Op.READ)
    # The dispatcher: the one writer of events, results and sends; ticks and copies go to the
    # commands topic; one transactional id per input partition.
    acls += _topic(DISPATCHER, commands, Op.READ, Op.WRITE)
    acls += _topic(DISPATCHER, events, Op.READ, Op.WRITE)
    acls += _topic(DISPATCHER, results, Op.READ, Op.WRITE)
    acls += _topic(DISPATCHER, sends, Op.WRITE)
    # The fence: pauses, resumes and cancels, in the transactions of their events.
    acls += _topic(DISPATCHER, control, Op.WRITE)
    # The dead letters are read back by the rebuild and the fence reader, which read their
    # sources more than once and write a letter only once (services/common/deadletters.py).
    acls += _topic(DISPATCHER, dead, Op.READ, Op.WRITE)
    acls.append(Acl(DISPATCHER, Resource.GROUP, f"{prefix}-dispatcher", Pattern.LITERAL, Op.READ))
    for txn in (f"{prefix}-dispatcher-", f"{prefix}-intake-"):
        acls.append(Acl(DISPATCHER, Resource.TRANSACTIONAL_ID, txn, Pattern.PREFIXED, Op.WRITE))
    # Its intake relay (services/dispatcher/intake.py) reads every integrator's intake topic in
    # its own group, and forwards or answers in its own transactions.
    acls.append(Acl(DISPATCHER, Resource.TOPIC, f"{prefix}.intake.", Pattern.PREFIXED, Op.READ))
    acls.append(
        Acl(DISPATCHER, Resource.TOPIC, f"{prefix}.intake-results.", Pattern.PREFIXED, Op.WRITE)
    )
    acls.append(Acl(DISPATCHER, Resource.GROUP, f"{prefix}-intake", Pattern.LITERAL, Op.READ))
    # Delivery: reads the sends, reports outcomes as commands (the only writer of
    # RecordDeliveryOutcomes: the intake relay refuses them from integrators).
    acls += _topic(DELIVERY, sends, Op.READ)
    acls += _topic(DELIVERY, control, Op.READ)
    acls += _topic(DELIVERY, commands, Op.WRITE)
    acls += _topic(DELIVERY, dead, Op.READ, Op.WRITE)
    acls.append(Acl(DELIVERY, Resource.GROUP, f"{prefix}-delivery", Pattern.LITERAL, Op.READ))
    # Projections: read the events.
    acls += _topic(PROJECTIONS, events, Op.READ)
    acls += _topic(PROJECTIONS, dead, Op.WRITE)
    acls.append(Acl(PROJECTIONS, Resource.GROUP, f"{prefix}-projections", Pattern.LITERAL, Op.READ))
    return sorted(set(acls))


def integrator_acls(prefix: str, principal: str) -> list[Acl]:
    """An integrating service writes its own intake topic and nothing else, and reads the
    answers to its own commands (never the results topic, which holds every account's)."""
    return [
        *_topic(principal, intake_topic(prefix, principal), Op.WRITE),
        *_topic(principal, Topics(prefix).intake_results(principal), Op.READ),
        # Its own consumer groups, named `<principal>.<anything>`, to read its answers. The dot
        # is not allowed in principal names, so the prefix covers no other integrator's groups
        # ("crm." is not a prefix of "crm-eu.x") and no service group ("<prefix>-dispatcher").
        Acl(principal, Resource.GROUP, f"{principal}.", Pattern.PREFIXED, Op.READ),
    ]


# ---------------------------------------------------------------------- requests


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 30

    def __init__(self, acls: list[Acl]) -> None:
        self.acls = acls

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class(
            [
                (a.resource, a.name, a.pattern, f"User:{a.principal}", "*", a.op, ALLOW)
                for a in self.acls
            ]
        )


class _ScramResponse(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _ScramStruct(RequestStruct):  # type: ignore[misc]  # aiokafka is untyped
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _ScramResponse
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _UpsertScram(Request[_ScramStruct]):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 51

    def __init__(self, name: str, password: str) -> None:
        self.name = name
        self.password = password

    def build(self, request_struct_class: type[Any]) -> Any:
        salt = os.urandom(32)
        # What the broker stores for SCRAM: Hi(password, salt, i) (RFC 5802), never the password.
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, SCRAM_ITERATIONS)
        # mechanism 1 = SCRAM-SHA-256
        return request_struct_class([], [(self.name, 1, SCRAM_ITERATIONS, salt, salted, {})], {})


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(settings))


async def create_acls(settings: Settings, acls: list[Acl]) -> None:
    """Create the ACLs (an existing one is left as is). As a super user."""
    admin = _admin(settings)
    await admin.start()
    try:
        for start in range(0, len(acls), 100):
            chunk = acls[start : start + 100]
            response = (await admin._send_request(_CreateAcls(chunk))).to_object()
            for acl, outcome in zip(chunk, response["creation_responses"], strict=True):
                if outcome["error_code"]:
                    raise KafkaAdminError(
                        f"{acl}: error {outcome['error_code']}: {outcome['error_message']}"
                    )
        await _until_visible(admin, acls)
    finally:
        await admin.close()


#: How long a created ACL may take to reach the broker's authorizer (it applies the metadata log
#: a moment after the controller committed it).
ACL_PROPAGATION_S = 15.0

ANY = 1  # Kafka's ANY in the ResourceType, PatternType, AclOperation and permission filters


async def _until_visible(admin: AIOKafkaAdminClient, acls: list[Acl]) -> None:
    """Wait until the broker's authorizer lists every ACL: a client authorising right after
    create_acls returned would otherwise be refused by a broker that has not applied them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ACL_PROPAGATION_S
    wanted = {(a.resource, a.name, a.pattern, f"User:{a.principal}", a.op) for a in acls}
    while True:
        seen: set[tuple[int, str, int, str, int]] = set()
        for principal in sorted({a.principal for a in acls}):
            request = DescribeAclsRequest(ANY, None, ANY, f"User:{principal}", None, ANY, ANY)
            response = (await admin._send_request(request)).to_object()
            for resource in response["resources"]:
                for entry in resource["acls"]:
                    seen.add(
                        (
                            resource["resource_type"],
                            resource["resource_name"],
                            resource["resource_pattern_type"],
                            entry["principal"],
                            entry["operation"],
                        )
                    )
        if wanted <= seen:
            return
        if loop.time() > deadline:
            raise KafkaAdminError(f"ACLs not applied by the broker: {sorted(wanted - seen)[:5]}")
        await asyncio.sleep(0.1)


async def create_intake_topic(settings: Settings, principal: str) -> str:
    """The integrator's intake topic and its answers' topic, with the service's partition count
    (answers are written at their message's partition number) and history config. Returns the
    intake topic."""
    topics = Topics(settings.topic_prefix)
    config = topic_configs(settings, topics)[topics.events]  # history kept, no timestamp rule
    admin = _admin(settings)
    await admin.start()
    try:
        for topic in (topics.intake(principal), topics.intake_results(principal)):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            topic,
                            settings.kafka_partitions,
                            settings.kafka_replication_factor,
                            topic_configs=config,
                        )
                    ]
                )
    finally:
        await admin.close()
    return topics.intake(principal)


async def upsert_scram_user(settings: Settings, name: str, password: str) -> None:
    """Create (or set the password of) a SCRAM-SHA-256 user. As a super user."""
    admin = _admin(settings)
    await admin.start()
    try:
        response = (await admin._send_request(_UpsertScram(name, password))).to_object()
        for result in response["results"]:
            if result["error_code"]:
                raise KafkaAdminError(
                    f"user {name}: error {result['error_code']}: {result['error_message']}"
                )
    finally:
        await admin.close()


def new_password() -> str:
    return secrets.token_urlsafe(18)


def credentials(text: str) -> list[tuple[str, str]]:
    """``NAME PASSWORD`` lines (the format of the scripts' ``.state/kafka/credentials``), blank
    lines and ``#`` comments skipped. Raises ValueError for a line without both."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, password = line.partition(" ")
        if not name or not password.strip():
            raise ValueError(f"line {number}: NAME PASSWORD expected")
        found.append((name, password.strip()))
    return found


async def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.kafka_admin")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("apply-service-acls", help="the service principals' ACLs (idempotent)")
    sub.add_parser(
        "upsert-scram-users",
        help="create (or set the password of) the SCRAM users of the NAME PASSWORD lines on stdin"
        " (docker-compose.yml's kafka-setup)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "upsert-scram-users":
        try:
            users = credentials(sys.stdin.read())
        except ValueError as error:
            parser.error(str(error))
        for name, password in users:
            await upsert_scram_user(settings, name, password)
        print(f"{len(users)} SCRAM users: {', '.join(name for name, _ in users)}")
        return 0
    acls = service_acls(settings.topic_prefix)
    await create_acls(settings, acls)
    print(f"{len(acls)} ACLs of {', '.join(SERVICE_PRINCIPALS)} on {settings.topic_prefix}.*")
    return 0


def main() -> None:
    sys.exit(asyncio.run(_main(sys.argv[1:])))


if __name__ == "__main__":
    main()
