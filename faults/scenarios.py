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
    - ``sigkill-broker``: SIGKILL the Kafka broker, then `scripts/kafka.sh start`.
    """

    at: float
    action: str
    target: str


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str
    injections: tuple[Injection, ...]

    @property
    def injection(self) -> str:
        return ", ".join(f"{i.action} {i.target} at {round(i.at * 100)} %" for i in self.injections)


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
    ]
    return rows


#: The reduced matrix of `make test` (tests/integration/test_faults.py): one row of each kind of
#: SIGKILL (the time of `make test`; the SIGTERM rows are in `make faults`).
REDUCED = ("sigkill-dispatcher-40", "sigkill-delivery", "sigkill-broker")
