"""`make bench`: every figure of issue 17 in one run, each beside its ceiling and target.

    make bench          # the issue's sizes (about 15-20 minutes on 2 cores)
    make bench-smoke    # BENCH_QUICK=1: a few thousand recipients, every figure once

Writes BENCH_OUT/latest.json, a dated copy and latest.png (default bench/results/) and, unless
quick, the table of docs/benchmarks.md. Progress goes to stderr: which figure, how far.
Environment: BENCH_QUICK=1 (small sizes), BENCH_OUT (directory), BENCH_DOCS (the page to
update, empty for none), BENCH_ONLY (comma-separated groups: planner, dispatch, delivery,
pause, projections, commands, processor; for development), BENCH_SET (other sizes:
"delivery_mails=10000,projections_runs=1"; for development), BENCH_DEADLINE (an ISO time with
offset: groups not started by then are recorded as not run). A figure whose measurement fails
is recorded with its error and the run goes on; the exit status is then 1.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    bench_commands,
    bench_delivery,
    bench_dispatch,
    bench_import,
    bench_intake,
    bench_paging,
    bench_planner,
    bench_processor,
    bench_projections,
    intake_floor,
    results,
)
from bench.harness.servers import servers
from bench.progress import say
from bench.results import Figure, failed, rate_ratio

ROOT = Path(__file__).resolve().parents[1]

FULL: dict[str, Any] = {
    "planner_recipients": 1_000_000,
    "planner_modes": "fixed,throttled,timezone",
    "dispatch_sizes": (10_000, 60_000, 100_000, 1_000_000),
    "recovery_sizes": (60_000, 1_000_000),
    "delivery_mails": 50_000,
    "pool": 8,
    "sink_mails": 10_000,
    "pause_recipients": 30_000,
    "fence_measure_s": 4,
    "fence_rounds": 3,
    "throughput_recipients": 20_000,
    "throughput_s": 6,
    "delivery_kills": 2,
    "projections_recipients": 1_000_000,
    "projections_runs": 3,
    "command_rate": 200,
    "command_seconds": 60,
    "step_seconds": 10,
    "max_rate": 3_200,
    "projection_kills": 2,
    "warmup_s": 5,
    "processor": (200, 9, 10),
    "intake_clients": 4,
    "intake_chunks": 10,
    "import_rows": 1_000_000,
    "paging_rows": 10_000_000,
}

QUICK: dict[str, Any] = {
    **FULL,
    "planner_recipients": 20_000,
    "planner_modes": "fixed",
    "dispatch_sizes": (1_000, 2_000, 5_000),
    "recovery_sizes": (2_000, 5_000),
    "delivery_mails": 2_000,
    "sink_mails": 1_000,
    "pause_recipients": 6_000,
    "fence_measure_s": 1,
    "fence_rounds": 1,
    "throughput_recipients": 4_000,
    "throughput_s": 2,
    "delivery_kills": 1,
    "projections_recipients": 5_000,
    "command_rate": 20,
    "command_seconds": 5,
    "step_seconds": 2,
    "max_rate": 40,
    "projection_kills": 1,
    "warmup_s": 1,
    "processor": (20, 2, 10),
    "intake_clients": 2,
    "intake_chunks": 1,
    "import_rows": 5_000,
    "paging_rows": 20_000,
}

# The order of a run: the cheaper groups first, so a run cut short has the most figures; pause
# after delivery (the same worker, now with the fence).
GROUPS = (
    "planner",
    "commands",
    "intake",
    "import",
    "dispatch",
    "projections",
    "delivery",
    "pause",
    "processor",
    "paging",
)


class Run:
    def __init__(self, cfg: dict[str, Any], tmp: Path) -> None:
        self.cfg = cfg
        self.tmp = tmp
        self.figures: dict[str, Figure] = {}
        self.extras: dict[str, Any] = {"config": {k: v for k, v in cfg.items()}}
        self.errors = 0

    def guard(self, group: str, names: dict[str, str], body: Callable[[], None]) -> None:
        """Run one group; on failure record each of its figures (name -> unit) with the error."""
        say(group, "start")
        try:
            body()
        except Exception as error:  # recorded, and the run goes on to the next figure
            self.errors += 1
            traceback.print_exc()
            for name, unit in names.items():
                if name not in self.figures:
                    self.figures[name] = failed(unit, error)
        self.extras.setdefault("load_after_group", {})[group] = [
            round(x, 2) for x in os.getloadavg()
        ]
        say(group, "finished")

    # ----------------------------------------------------------------------------- the groups

    def planner(self) -> None:
        found = bench_planner.main(
            [
                "--recipients",
                str(self.cfg["planner_recipients"]),
                "--modes",
                self.cfg["planner_modes"],
            ],
            out=lambda line: say("planner", line),
        )
        runs = [
            {
                "mode": r.mode,
                "value": round(r.per_second, 1),
                "plan_cpu_s": round(r.plan_cpu, 3),
                "build_cpu_s": round(r.build_cpu, 3),
                "ticks": r.ticks,
            }
            for r in found
        ]
        self.figures["planner"] = Figure(
            value=min(r["value"] for r in runs),
            unit="recipients/CPU-s",
            target=300_000,
            sizes={"recipients": self.cfg["planner_recipients"]},
            runs=runs,
            note="the slowest of the modes (fixed, throttled, recipient time zone); "
            "planning from schedule to sent, the core alone",
        )

    def dispatch(self) -> None:
        sizes = self.cfg["dispatch_sizes"]
        runs = []
        for n in sizes:
            runs.append(asyncio.run(bench_dispatch.at_size(n, self.tmp, *servers())))
        top = runs[-1]
        self.figures["dispatch"] = Figure(
            value=top["rate"],
            unit="sends/s",
            ceiling=top["ceiling_rate"],
            ratio=top["ratio"],
            target=0.5,
            target_of="ratio",
            sizes={"recipients": top["recipients"]},
            runs=[
                {"recipients": r["recipients"], "value": r["rate"], "ceiling": r["ceiling_rate"]}
                for r in runs
            ],
            note="aim 0.8; ceiling = aiokafka's transactional producer alone, same records",
        )
        per = [
            {
                "recipients": r["recipients"],
                "rss_mb": r["rss_mb"],
                "value": round(r["rss_mb"] * 1024 * 1024 / r["recipients"], 1),
            }
            for r in runs
        ]
        marginal = None
        if len(runs) > 1 and runs[-1]["recipients"] > runs[0]["recipients"]:
            marginal = (
                (runs[-1]["rss_mb"] - runs[0]["rss_mb"])
                * 1024
                * 1024
                / (runs[-1]["recipients"] - runs[0]["recipients"])
            )
        self.figures["memory_per_recipient"] = Figure(
            value=per[-1]["value"],
            unit="bytes/recipient",
            better="lower",
            sizes={"recipients": top["recipients"]},
            runs=per,
            note=f"dispatcher RSS {top['rss_mb']:.0f} MB / audience; marginal "
            f"{marginal:.0f} bytes/recipient between the smallest and largest size"
            if marginal is not None
            else "",
        )
        recovery = [r for r in runs if r["recipients"] in self.cfg["recovery_sizes"]] or runs
        self.figures["recovery_dispatcher"] = results.recovery(
            recovery[-1]["recovery_s"],
            "SIGKILL to the next send record committed; "
            + ", ".join(f"{r['recipients']:,}: {r['recovery_s']:.1f} s" for r in recovery),
            runs=[{"recipients": r["recipients"], "value": r["recovery_s"]} for r in runs],
            sizes={"recipients": [r["recipients"] for r in recovery]},
        )
        self.figures["growth"] = Figure(
            value=top["rate"],
            unit="sends/s",
            sizes={"recipients": list(sizes)},
            runs=[
                {
                    "recipients": r["recipients"],
                    "rate": r["rate"],
                    "rss_mb": r["rss_mb"],
                    "recovery_s": r["recovery_s"],
                }
                for r in runs
            ],
            note="; ".join(
                f"{r['recipients']:,}: {r['rate']:,.0f}/s, {r['rss_mb']:.0f} MB" for r in runs
            ),
        )

    def delivery(self) -> None:
        found = asyncio.run(
            bench_delivery.delivery(
                self.cfg["delivery_mails"],
                self.cfg["pool"],
                self.cfg["sink_mails"],
                self.tmp,
                servers(),
            )
        )
        self.extras["delivery"] = found
        self.figures["delivery"] = Figure(
            value=found["worker_rate"],
            unit="mails/s",
            ceiling=found["plain_rate"],
            ratio=rate_ratio(found["worker_rate"], found["plain_rate"]),
            target=0.8,
            target_of="ratio",
            sizes={"mails": found["mails"], "pool": found["pool"]},
            runs=[found],
            also={"sink ceiling": found["sink_rate"]},
            note=f"ceiling = plain aiosmtplib, {found['pool']} connections, same mails; sink's "
            f"own ceiling {found['sink_rate'] or 0:,.0f} mails/s "
            f"({found['sink_connections']} connections)",
        )

    def pause(self) -> None:
        found = asyncio.run(bench_delivery.fence(self.cfg, self.tmp, servers()))
        pool = found["pool"]
        pause, open_, cancel = found["pause"], found["pause_no_window"], found["cancel"]
        plan = {"plan": "default", "max_in_flight": pause["max_in_flight"], "pool": pool}
        for kind, run in (("pause", pause), ("cancel", cancel)):
            extra = (
                f"; with no window: {open_['mails_after_accepted']} mails, the last "
                f"{open_['last_mail_after_accepted_s']:.3f} s after"
                if kind == "pause"
                else ""
            )
            facts = (
                f"default plan (max_in_flight={run['max_in_flight']}), worker at "
                f"{run['achieved_rate']:,.0f} mails/s, pool {pool}: "
                f"{run['mails_after_accepted']} mails after the {kind} was accepted "
                f"({run['accepted_after_request_ms']:.0f} ms after the request), the last "
                f"{run['last_mail_after_accepted_s']:.3f} s after; {run['returned']:,} returned"
                f"{extra}"
            )
            runs = [run, open_] if kind == "pause" else [run]
            self.figures[f"{kind}_reaction"] = Figure(
                value=run["last_mail_after_accepted_s"],
                unit="s",
                target=0.5,
                better="lower",
                sizes={**plan, "recipients": run["recipients"]},
                runs=runs,
                also={"no window": open_["last_mail_after_accepted_s"]} if kind == "pause" else {},
                note=f"{kind} accepted to the last mail at the sink; {facts}",
            )
            self.figures[f"{kind}_mails_after"] = Figure(
                value=run["mails_after_accepted"],
                unit="mails",
                target=pool,
                better="lower",
                sizes={**plan, "recipients": run["recipients"]},
                runs=runs,
                also={"no window": open_["mails_after_accepted"]} if kind == "pause" else {},
                note=f"mails at the sink after the {kind} was accepted (target: the SMTP pool); "
                f"{facts}",
            )
        rates = found["throughput"]
        default, none = statistics.median(rates["default"]), statistics.median(rates["none"])
        self.figures["window_throughput"] = Figure(
            value=default,
            unit="mails/s",
            ceiling=none,
            ratio=rate_ratio(default, none),
            target=0.9,
            target_of="ratio",
            sizes={
                "rounds": self.cfg["fence_rounds"],
                "recipients": self.cfg["throughput_recipients"],
                "seconds": self.cfg["throughput_s"],
            },
            runs=[{"window": k, "value": x} for k, v in rates.items() for x in v],
            note=f"delivery with the default plan's in-flight window against none (the "
            f"ceiling), median of {self.cfg['fence_rounds']} alternating rounds: default "
            f"{rates['default']}, none {rates['none']} mails/s",
        )
        self.figures["recovery_delivery"] = results.median_recovery(
            pause["recovery_delivery_s"],
            "SIGKILL of the delivery worker to the next mail at the sink (median)",
        )

    def projections(self) -> None:
        found = asyncio.run(
            bench_projections.run(
                self.cfg["projections_recipients"], False, self.cfg["projections_runs"]
            )
        )
        runs = found["runs"]
        ratios = [r["ratio"] for r in runs]
        self.figures["projections"] = Figure(
            value=statistics.median(r["value"] for r in runs),
            unit="sends/s",
            ceiling=statistics.median(r["ceiling"] for r in runs),
            ratio=statistics.median(ratios),
            target=0.33,
            target_of="ratio",
            sizes={"recipients": found["recipients"]},
            runs=runs,
            note=f"median of {len(runs)} runs, autovacuum on; ratio spread "
            f"{min(ratios):.2f}–{max(ratios):.2f}; ceiling = asyncpg COPY of the same rows",
        )

    def commands(self) -> None:
        c = self.cfg
        found = asyncio.run(
            bench_commands.run(
                c["command_rate"],
                c["command_seconds"],
                c["step_seconds"],
                c["max_rate"],
                c["projection_kills"],
                c["warmup_s"],
                self.tmp,
                *servers()[:2],
            )
        )
        steady = found["steady"]
        alone = found["one_at_a_time"]
        size = {"rate": c["command_rate"], "seconds": c["command_seconds"]}
        errors = f"; {steady['errors']} errors" if steady["errors"] else ""
        self.figures["command_commit_p99"] = Figure(
            value=steady["commit_p99_ms"],
            unit="ms",
            target=50,
            better="lower",
            sizes=size,
            runs=[steady, {"one_at_a_time": alone}],
            also={"p50": steady["commit_p50_ms"], "p95": steady["commit_p95_ms"]},
            note=f"p50 {steady['commit_p50_ms']} ms, p95 {steady['commit_p95_ms']} ms; "
            f"request to committed answer{errors}; one command at a time: p50 "
            f"{alone['commit_p50_ms']} ms",
        )
        self.figures["command_visible_p99"] = Figure(
            value=steady["visible_p99_ms"],
            unit="ms",
            target=500,
            better="lower",
            sizes=size,
            runs=[steady, {"one_at_a_time": alone}],
            also={"p50": steady["visible_p50_ms"], "p95": steady["visible_p95_ms"]},
            note=f"p50 {steady['visible_p50_ms']} ms, p95 {steady['visible_p95_ms']} ms; "
            "request to the change visible in the read API; one command at a time: p50 "
            f"{alone['visible_p50_ms']} ms",
        )
        self.figures["command_max_rate"] = Figure(
            value=found["max_rate"] or 0,
            unit="commands/s",
            sizes={"p99_limit_ms": bench_commands.P99_LIMIT_MS, "max_probe": c["max_rate"]},
            runs=found["search"],
            note=f"highest rate held with commit p99 ≤ 250 ms ({c['step_seconds']} s per step); "
            f"first rate missed: {found['first_missed']}",
        )
        self.figures["recovery_projections"] = results.median_recovery(
            found["recovery_projections_s"],
            "SIGKILL of the projections worker to a new command visible in the read API",
        )

    def intake(self) -> None:
        c = self.cfg
        found = asyncio.run(
            bench_intake.run(c["intake_clients"], c["intake_chunks"], self.tmp, *servers()[:2])
        )
        errors = f"; {found['errors']} chunks not answered 200" if found["errors"] else ""
        floor = intake_floor.measure(runs=7, contacts=10_000)
        self.figures["rest_intake"] = Figure(
            value=found["contacts_per_s"],
            unit="contacts/s",
            ceiling=floor["ceiling_contacts_per_s"],
            target=bench_intake.TARGET,
            sizes={"contacts": found["contacts"], "clients": found["clients"]},
            runs=[found],
            also={"chunk_p50_ms": found["chunk_p50_ms"]},
            note=f"{found['clients']} clients, chunks of {found['chunk']:,} over HTTP, to the "
            f"committed answer; chunk p50 {found['chunk_p50_ms']} ms, p99 "
            f"{found['chunk_p99_ms']} ms; CPU ms per 10,000 contacts "
            f"{found['cpu_ms_per_10k_contacts']}{errors}; ceiling = one core deciding at the "
            f"raw libraries' floor of {floor['floor_us']} us a contact (bench/intake_floor.py)",
        )

    def csv_import(self) -> None:
        rows = self.cfg["import_rows"]
        found = asyncio.run(bench_import.run(rows, *servers()[:2]))
        self.figures["csv_import"] = Figure(
            value=found["seconds"],
            unit="s",
            target=60 if rows >= 1_000_000 else None,
            better="lower",
            sizes={"rows": rows},
            runs=[found],
            note=f"{rows:,} CSV rows streamed to POST /imports, first byte to summary; "
            f"{found['rows_per_s']:,.0f} rows/s, state {found['state']}, added {found['added']}; "
            f"API peak RSS {found['peak_rss_mib']} MiB",
        )

    def paging(self) -> None:
        rows = self.cfg["paging_rows"]
        found = asyncio.run(bench_paging.run(rows, self.tmp, *servers()[:2]))
        pages = found["pages"]
        self.figures["recipients_page"] = Figure(
            value=found["keyset_p99_ms"],
            unit="ms",
            target=bench_paging.TARGET_MS,
            better="lower",
            sizes={"rows": rows},
            runs=[found],
            also={k: pages[k]["p50_ms"] for k in ("first", "middle", "last", "walk")},
            note=f"GET /recipients over HTTP, 100 per page, keyset; p99 of first/middle/last/"
            f"walk, the worst: first {pages['first']['p99_ms']}, middle "
            f"{pages['middle']['p99_ms']}, last {pages['last']['p99_ms']}, walk "
            f"{pages['walk']['p99_ms']} ms; not_delivered first page p99 "
            f"{pages['not_delivered']['p99_ms']} ms; the middle page's query alone in Postgres "
            f"{pages['middle_query_ms']} ms",
        )

    def processor(self) -> None:
        self.extras["processor"] = asyncio.run(bench_processor.bench(*self.cfg["processor"]))


def main() -> int:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    cfg = dict(QUICK if quick else FULL)
    # BENCH_SET="delivery_mails=10000,projections_runs=1": other sizes, for development only.
    for item in filter(None, os.environ.get("BENCH_SET", "").split(",")):
        key, _, value = item.partition("=")
        if key not in cfg or isinstance(cfg[key], tuple):
            raise SystemExit(f"BENCH_SET: {key} is not a number setting")
        cfg[key] = type(cfg[key])(value)
    deadline = os.environ.get("BENCH_DEADLINE")  # ISO time: groups not started by then are skipped
    out = Path(os.environ.get("BENCH_OUT") or ROOT / "bench" / "results")
    docs_env = os.environ.get("BENCH_DOCS")
    docs = (
        (None if quick else ROOT / "docs" / "benchmarks.md")
        if docs_env is None
        else (Path(docs_env) if docs_env else None)
    )
    only = [g for g in os.environ.get("BENCH_ONLY", "").split(",") if g] or list(GROUPS)
    started = datetime.now(UTC)
    machine = results.machine()
    say("bench", f"{'quick' if quick else 'full'} run; machine {machine}")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        run = Run(cfg, Path(tmp))
        plan: list[tuple[str, dict[str, str], Callable[[], None]]] = [
            ("planner", {"planner": "recipients/CPU-s"}, run.planner),
            (
                "commands",
                {
                    "command_commit_p99": "ms",
                    "command_visible_p99": "ms",
                    "command_max_rate": "commands/s",
                    "recovery_projections": "s",
                },
                run.commands,
            ),
            (
                "dispatch",
                {
                    "dispatch": "sends/s",
                    "memory_per_recipient": "bytes/recipient",
                    "recovery_dispatcher": "s",
                    "growth": "sends/s",
                },
                run.dispatch,
            ),
            ("projections", {"projections": "sends/s"}, run.projections),
            ("delivery", {"delivery": "mails/s"}, run.delivery),
            (
                "pause",
                {
                    "pause_reaction": "s",
                    "pause_mails_after": "mails",
                    "cancel_reaction": "s",
                    "cancel_mails_after": "mails",
                    "window_throughput": "mails/s",
                    "recovery_delivery": "s",
                },
                run.pause,
            ),
            ("processor", {}, run.processor),
            ("intake", {"rest_intake": "contacts/s"}, run.intake),
            ("import", {"csv_import": "s"}, run.csv_import),
            ("paging", {"recipients_page": "ms"}, run.paging),
        ]
        # The run's order is GROUPS' (cheapest first), whatever the order of this table.
        plan.sort(key=lambda item: GROUPS.index(item[0]))
        doc: dict[str, Any] = {}
        for number, (group, names, body) in enumerate(plan, 1):
            if group not in only:
                continue
            if deadline and datetime.now(UTC) > datetime.fromisoformat(deadline):
                say("bench", f"{group}: not started, past BENCH_DEADLINE {deadline}")
                for name, unit in names.items():
                    run.figures[name] = failed(unit, f"not run: past BENCH_DEADLINE {deadline}")
                run.errors += 1
            else:
                say("bench", f"group {number}/{len(plan)}: {group}")
                run.guard(group, names, body)
            # Written after every group: a run cut short still leaves what it measured.
            machine["load_at_end"] = list(os.getloadavg())
            doc = results.document(
                run.figures,
                started_at=started,
                finished_at=datetime.now(UTC),
                quick=quick,
                machine_facts=machine,
                extras=run.extras,
            )
            for path in results.write_all(doc, out, docs):
                say("bench", f"wrote {path}")
    print(results.table(doc))
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
