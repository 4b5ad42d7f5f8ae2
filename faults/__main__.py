"""`python -m faults` (`make faults`): the fault matrix on the real stack. Writes
faults/results/latest.json ({"rows": [...]}, one row per scenario) and the table between the
markers in docs/reliability.md. Exit status 1 when a row fails."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from faults.run import REPO_ROOT, ClusterMatrix, Matrix, Row
from faults.scenarios import Scenario, matrix

RESULTS = REPO_ROOT / "faults" / "results" / "latest.json"
DOC = REPO_ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- faults:table:begin -->", "<!-- faults:table:end -->"


def table(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Produced by `{command}`.",
        "",
        "| scenario | fault | injection | workload | runs | duplicates | lost | unknown | passed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['fault']} | {r['injection']} | {r['workload']} | {r['runs']}"
            f" | {r['duplicates']} | {r['lost']} | {r['unknown']}"
            f" | {'yes' if r['passed'] else 'NO'} |"
        )
    return "\n".join(lines)


def publish(rows: list[dict[str, Any]], command: str) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{table(rows, command)}\n{END}{tail}")


async def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--only", nargs="*", default=None, help="scenario names")
    parser.add_argument("--within", type=float, default=900.0, help="seconds per wait")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args(argv)
    rows: list[Row] = []
    command = "make faults" + (f" FAULTS_ARGS='{' '.join(argv)}'" if argv else "")
    by_name = {s.name: s for s in matrix()}
    unknown = [name for name in args.only or [] if name not in by_name]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {sorted(by_name)}")
    # --only runs the named rows in the order given.
    scenarios = [by_name[name] for name in args.only] if args.only else list(by_name.values())
    # Consecutive rows share a harness; the cluster rows run on a ClusterMatrix of their own.
    groups: list[list[Scenario]] = []
    for scenario in scenarios:
        if groups and groups[-1][0].cluster is scenario.cluster:
            groups[-1].append(scenario)
        else:
            groups.append([scenario])
    for group in groups:
        runner = (ClusterMatrix if group[0].cluster else Matrix)(within=args.within)
        async with runner:
            for scenario in group:
                row = await runner.run(scenario, args.recipients, args.seed)
                rows.append(row)
                print(
                    json.dumps(
                        {
                            **row.as_json(),
                            "violations": list(row.verdict.violations),
                            "seconds": round(row.seconds, 1),
                            "phases": row.phases,
                            **row.notes,
                        }
                    ),
                    flush=True,
                )
                # After every row: a long run stopped early keeps the rows it finished.
                publish([r.as_json() for r in rows], command)
    return 0 if all(r.verdict.passed for r in rows) else 1


def main() -> None:
    sys.exit(asyncio.run(_main(sys.argv[1:])))


if __name__ == "__main__":
    main()
