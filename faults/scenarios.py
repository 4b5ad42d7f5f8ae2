"""The rows of the fault matrix: each a live send of N recipients on the stack the project's
scripts run (`scripts/services.sh start`, default topic prefix), with faults injected at given
progress points (the share of the audience delivered in the ledger). Every restart goes through
the project's own scripts (services.sh, kafka.sh), as a user does it."""

from __future__ import annotations

from dataclasses import dataclass

SERVICES = ("commands", "dispatcher", "delivery", "projections")


@dataclass(frozen=True)
class Injection:
    """At `at` (0..1 of the audience delivered): `action` on `target`.

    - ``sigkill``: SIGKILL the process, then `scripts/services.sh start` at once (the zombie
      liveness of scripts/lib.sh decides whether it relaunches);
    - ``sigterm``: SIGTERM, wait until it has exited, then `scripts/services.sh start`;
    - ``sigkill-broker``: SIGKILL the Kafka broker, then `scripts/kafka.sh start`;
    - ``pg-restart``: `scripts/postgres.sh restart-immediate` (every backend ended at once, no
      checkpoint), then `scripts/services.sh start`;
    - ``pg-down-rebalance``: a second delivery worker (`services.sh start-second delivery`)
      shares the partitions; Postgres is stopped at once (`postgres.sh stop-immediate`); the
      second is SIGKILLed, and the first is assigned its partitions while the ledger cannot be
      reached; then `postgres.sh start` and `services.sh start`;
    - ``zombie``: SIGSTOP the target (dispatcher or delivery), `services.sh start-second` it,
      wait until the second owns every partition, SIGCONT the first; the second is stopped
      after the row;
    - ``bad-input``: bad records on the consumed topics, another account's key, hostile API
      input (faults/badinput.py);
    - ``cluster-kill`` (cluster rows): SIGKILL broker `target` of scripts/kafka_cluster.sh,
      then `kafka_cluster.sh start`;
    - ``cluster-leaders`` (cluster rows): `kafka_cluster.sh stop-node target` (a controlled
      shutdown: the leaders of its partitions move to the other two), then `start` (its
      preferred leaderships move back).
    """

    at: float
    action: str
    target: str


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str
    injections: tuple[Injection, ...]
    #: Commands race the send (pauses and resumes, adds, removes, with `cancel` a cancel last),
    #: and the message's events are checked against the pure core's replay.
    race: bool = False
    cancel: bool = False
    #: On the three-broker cluster of scripts/kafka_cluster.sh (faults/run.py ClusterMatrix).
    cluster: bool = False

    @property
    def injection(self) -> str:
        parts = [f"{i.action} {i.target} at {round(i.at * 100)} %" for i in self.injections]
        if self.race:
            cancel = ", then cancel" if self.cancel else ""
            parts.append(f"seeded pause/resume/add/remove{cancel}, from the start")
        return ", ".join(parts)


def matrix() -> list[Scenario]:
    rows = [
        Scenario(
            f"sigkill-dispatcher-{p}",
            "SIGKILL dispatcher",
            (Injection(p / 100, "sigkill", "dispatcher"),),
        )
        for p in (20, 40, 60, 80)
    ]
    rows += [
        Scenario(f"sigterm-{s}", f"SIGTERM {s}", (Injection(0.3, "sigterm", s),)) for s in SERVICES
    ]
    rows += [
        Scenario("sigkill-delivery", "SIGKILL delivery", (Injection(0.4, "sigkill", "delivery"),)),
        Scenario(
            "sigkill-projections",
            "SIGKILL projections",
            (Injection(0.4, "sigkill", "projections"),),
        ),
        Scenario(
            "sigkill-broker",
            "SIGKILL Kafka broker, restart",
            (Injection(0.4, "sigkill-broker", "kafka"),),
        ),
        Scenario(
            "postgres-restart-immediate",
            "Postgres restarted at once (immediate mode)",
            (Injection(0.4, "pg-restart", "postgres"),),
        ),
        Scenario(
            "postgres-down-delivery-rebalance",
            "Postgres unreachable while a delivery worker takes partitions in a rebalance",
            (Injection(0.3, "pg-down-rebalance", "delivery"),),
        ),
        Scenario(
            "zombie-dispatcher",
            "SIGSTOP dispatcher until a second owns its partitions, SIGCONT",
            (Injection(0.3, "zombie", "dispatcher"),),
        ),
        Scenario(
            "zombie-delivery",
            "SIGSTOP delivery worker until a second owns its partitions, SIGCONT",
            (Injection(0.3, "zombie", "delivery"),),
        ),
        Scenario("commands-race", "commands racing the send", (), race=True),
        Scenario(
            "commands-race-cancel",
            "commands racing the send, cancel last",
            (),
            race=True,
            cancel=True,
        ),
        Scenario(
            "bad-input",
            "bad records, another account's key, hostile API input",
            (Injection(0.3, "bad-input", "all"),),
        ),
        Scenario(
            "cluster-sigkill-broker",
            "three brokers: SIGKILL one, restart it",
            (Injection(0.3, "cluster-kill", "2"),),
            cluster=True,
        ),
        Scenario(
            "cluster-leaders-move",
            "three brokers: partition leaders move away and back",
            (Injection(0.3, "cluster-leaders", "1"),),
            cluster=True,
        ),
    ]
    return rows


#: The reduced matrix of `make test` (tests/integration/test_faults.py): the rows that fit about
#: four minutes of `make test` on the shared 2-core development machine at 10,000 recipients: a
#: process kill mid-send, the racing commands with a cancel (checked against the core's
#: replay) and the bad input. The others (each row's time at 10,000 is in docs/reliability.md)
#: run in `make faults`; `FAULTS_REDUCED=all` runs every row but the cluster's in the test.
REDUCED = (
    "sigkill-dispatcher-40",
    "commands-race-cancel",
    "bad-input",
)
