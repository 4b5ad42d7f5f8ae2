"""`python -m faults` (`make faults`): the fault matrix on the real stack. Writes
faults/results/latest.json ({"rows": [...]}, one row per scenario) and the table between the
markers in docs/reliability.md. Exit status 1 when a row fails."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from faults.run import REPO_ROOT, Matrix, Row
from faults.scenarios import matrix

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
    async with Matrix(within=args.within) as runner:
        for scenario in matrix():
            if args.only and scenario.name not in args.only:
                continue
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
    command = "make faults" + (f" FAULTS_ARGS='{' '.join(argv)}'" if argv else "")
    publish([r.as_json() for r in rows], command)
    return 0 if all(r.verdict.passed for r in rows) else 1


def main() -> None:
    sys.exit(asyncio.run(_main(sys.argv[1:])))


if __name__ == "__main__":
    main()
