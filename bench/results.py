"""What `make bench` writes: bench/results/latest.json (and a dated copy), a PNG plot of every
figure against its ceiling and target, and the table of docs/benchmarks.md.

No server is needed here: the writers take the figures as plain data, so a test runs them on
canned numbers (tests/bench/test_results.py) and checks the schema other tools read.

The JSON (schema version 1):

    {"schema": 1, "machine": {...}, "started_at": ISO, "finished_at": ISO, "quick": bool,
     "figures": {NAME: {"value": v, "unit": u, "ceiling": c|null, "ratio": r|null,
                        "target": t|null, "target_of": "value"|"ratio", "better": "higher"|"lower",
                        "met": bool|null, "sizes": {...}, "runs": [...],
                        "also": {label: number}, "note": str,
                        "error": str|null}},
     "extras": {...}}

`target` applies to `value` or to `ratio` (`target_of`); `better` says which side of it is good;
`met` is null when there is no target or no value. `ratio` is value / ceiling for rates and
ceiling / value for durations, so a ratio is always "fraction of the ceiling reached".
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

SCHEMA = 1

#: Every figure of issue 17 (and issue 12's fence: the pause/cancel mails after, the cancel
#: reaction, the window's throughput cost), in the order of the table and the plot.
NAMES = (
    "dispatch",
    "delivery",
    "projections",
    "command_commit_p99",
    "command_visible_p99",
    "command_max_rate",
    "pause_reaction",
    "pause_mails_after",
    "cancel_reaction",
    "cancel_mails_after",
    "window_throughput",
    "recovery_dispatcher",
    "recovery_delivery",
    "recovery_projections",
    "planner",
    "memory_per_recipient",
    "growth",
    "rest_intake",
    "csv_import",
    "recipients_page",
)

FIGURE_KEYS = ("value", "unit", "ceiling", "ratio", "target", "sizes", "runs")

DOCS_BEGIN = "<!-- bench-table:begin (written by make bench: bench/results.py) -->"
DOCS_END = "<!-- bench-table:end -->"


@dataclass
class Figure:
    value: float | None
    unit: str
    ceiling: float | None = None
    ratio: float | None = None
    target: float | None = None
    target_of: Literal["value", "ratio"] = "value"
    better: Literal["higher", "lower"] = "higher"
    sizes: dict[str, Any] = field(default_factory=dict)
    runs: list[Any] = field(default_factory=list)
    #: Secondary figures of the same unit drawn beside the ceiling (the sink's own ceiling,
    #: p50/p95 beside a p99, the pause without a window).
    also: dict[str, float | None] = field(default_factory=dict)
    note: str = ""
    error: str | None = None

    @property
    def met(self) -> bool | None:
        measured = self.ratio if self.target_of == "ratio" else self.value
        if self.target is None or measured is None:
            return None
        return measured >= self.target if self.better == "higher" else measured <= self.target

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["met"] = self.met
        return body


def failed(unit: str, error: BaseException | str, **known: Any) -> Figure:
    """A figure whose measurement raised: recorded with its error, never silently dropped."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return Figure(value=None, unit=unit, error=text[:500], **known)


#: Every recovery figure's target (issue 17): a SIGKILLed service is back at work within 5 s.
RECOVERY_TARGET_S = 5


def recovery(
    value: float | None, note: str, runs: list[Any], sizes: dict[str, Any] | None = None
) -> Figure:
    """A recovery figure: seconds from a SIGKILL to the service's next output (what "next
    output" is, the `note` says), lower is better, against `RECOVERY_TARGET_S`."""
    return Figure(
        value=value,
        unit="s",
        target=RECOVERY_TARGET_S,
        better="lower",
        sizes=sizes or {},
        runs=runs,
        note=note,
    )


def median_recovery(kills: list[float], note: str) -> Figure:
    """The recovery figure of several kills: their median, each kill a run (none: no value)."""
    return recovery(
        statistics.median(kills) if kills else None, note, [{"value": k} for k in kills]
    )


def rate_ratio(value: float | None, ceiling: float | None) -> float | None:
    if value is None or not ceiling:
        return None
    return round(value / ceiling, 3)


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    memory_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "arch": platform.machine(),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_mb": memory_kb // 1024 if memory_kb else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_at_start": list(load),
    }


def document(
    figures: dict[str, Figure],
    *,
    started_at: datetime,
    finished_at: datetime,
    quick: bool,
    machine_facts: dict[str, Any],
    extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    unknown = set(figures) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown figures {sorted(unknown)}")
    return {
        "schema": SCHEMA,
        "machine": machine_facts,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "quick": quick,
        "figures": {name: figures[name].as_json() for name in NAMES if name in figures},
        "extras": extras or {},
    }


def check(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a results document (empty: it has the form other tools read)."""
    problems = []
    for key in ("machine", "started_at", "figures"):
        if key not in doc:
            problems.append(f"missing {key}")
    if not isinstance(doc.get("machine"), dict):
        problems.append("machine is not an object")
    for name, figure in doc.get("figures", {}).items():
        if name not in NAMES:
            problems.append(f"unknown figure {name}")
        for key in FIGURE_KEYS:
            if key not in figure:
                problems.append(f"{name}: missing {key}")
        for key in ("value", "ceiling", "ratio", "target"):
            if figure.get(key) is not None and not isinstance(figure[key], int | float):
                problems.append(f"{name}: {key} is not a number or null")
        if not isinstance(figure.get("unit"), str):
            problems.append(f"{name}: unit is not a string")
        if not isinstance(figure.get("sizes"), dict):
            problems.append(f"{name}: sizes is not an object")
        if not isinstance(figure.get("runs"), list):
            problems.append(f"{name}: runs is not a list")
    return problems


def write_json(doc: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """latest.json and a dated copy (results-<started_at>.json) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    latest = out_dir / "latest.json"
    stamp = datetime.fromisoformat(doc["started_at"]).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    dated = out_dir / f"results-{stamp}.json"
    latest.write_text(text)
    dated.write_text(text)
    return latest, dated


# ------------------------------------------------------------------------------------- the table


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:,.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def _target(figure: dict[str, Any]) -> str:
    if figure.get("target") is None:
        return "—"
    sign = "≥" if figure.get("better", "higher") == "higher" else "≤"
    of = "ratio " if figure.get("target_of") == "ratio" else ""
    unit = "" if of else f" {figure['unit']}"
    return f"{of}{sign} {figure['target']:g}{unit}"


def _met(figure: dict[str, Any]) -> str:
    if figure.get("error"):
        return "**error**"
    met = figure.get("met")
    if met is None:
        return "—"
    if met:
        return "yes"
    measured = figure["ratio"] if figure.get("target_of") == "ratio" else figure["value"]
    target = figure["target"]
    if target:
        off = (measured - target) / target * 100
        return f"**no** ({off:+.0f} %)"
    return "**no**"


def table(doc: dict[str, Any]) -> str:
    """The markdown table of docs/benchmarks.md."""
    lines = [
        f"Run of {doc['started_at'][:19]} UTC"
        f"{' (quick mode: small sizes, not the issue figures)' if doc.get('quick') else ''}; "
        f"machine: {doc['machine'].get('cores')} cores, {doc['machine'].get('cpu')}, "
        f"load at start {doc['machine'].get('load_at_start')}.",
        "",
        "| figure | value | ceiling | ratio | target | met | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in doc["figures"].items():
        note = (f.get("error") and f"error: {f['error']}") or f.get("note", "")
        lines.append(
            f"| {name} | {_num(f['value'], f['unit'])} | {_num(f['ceiling'], f['unit'])} | "
            f"{_num(f['ratio'])} | {_target(f)} | {_met(f)} | {note.replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def update_docs(doc: dict[str, Any], page: Path) -> None:
    """Replace the table between the markers of `page` (the rest of the page is prose)."""
    text = page.read_text()
    begin, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{page} has no bench-table markers")
    page.write_text(text[: begin + len(DOCS_BEGIN)] + "\n" + table(doc) + text[end:])


# -------------------------------------------------------------------------------------- the plot


def plot(doc: dict[str, Any], path: Path) -> Path:
    """One panel per figure: the value beside its ceiling (bars) and the target (a line); the
    growth panel plots rate and memory against the audience (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = doc["figures"]
    names = [n for n in NAMES if n in figures]
    columns = 4
    rows = max(1, -(-len(names) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        f = figures[name]
        if name == "growth":
            _growth_panel(ax, f)
            continue
        labels, heights, colours = ["measured"], [f["value"] or 0.0], ["tab:blue"]
        if f.get("ceiling") is not None:
            labels.append("ceiling")
            heights.append(f["ceiling"])
            colours.append("tab:gray")
        for label, extra in (f.get("also") or {}).items():
            if isinstance(extra, int | float):
                labels.append(label)
                heights.append(extra)
                colours.append("tab:olive")
        ax.bar(labels, heights, color=colours)
        if f.get("target") is not None and f.get("target_of") == "value":
            ax.axhline(f["target"], color="tab:red", linestyle="--", label="target")
            ax.legend(loc="best", fontsize=7)
        elif f.get("target") is not None and f.get("ceiling") is not None:
            ax.axhline(
                f["target"] * f["ceiling"],
                color="tab:red",
                linestyle="--",
                label=f"target: {f['target']:g} × ceiling",
            )
            ax.legend(loc="best", fontsize=7)
        for run in f.get("runs") or []:
            if isinstance(run, dict) and isinstance(run.get("value"), int | float):
                ax.plot([0], [run["value"]], "k.", markersize=4)
        title = name if f.get("ratio") is None else f"{name} (ratio {f['ratio']:.2f})"
        if f.get("error"):
            title += " ERROR"
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(f["unit"], fontsize=8)
        ax.tick_params(labelsize=7)
    quick = " (quick mode)" if doc.get("quick") else ""
    fig.suptitle(f"make bench {doc['started_at'][:19]}{quick}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _growth_panel(ax: Any, f: dict[str, Any]) -> None:
    points = [r for r in f.get("runs") or [] if isinstance(r, dict) and r.get("recipients")]
    ax.set_title("growth (dispatch rate, memory)", fontsize=9)
    if not points:
        return
    xs = [p["recipients"] for p in points]
    ax.plot(xs, [p.get("rate") or 0 for p in points], "o-", color="tab:blue", label="sends/s")
    ax.set_xscale("log")
    ax.set_xlabel("recipients", fontsize=8)
    ax.set_ylabel("sends/s", fontsize=8, color="tab:blue")
    ax.tick_params(labelsize=7)
    right = ax.twinx()
    right.plot(
        xs, [p.get("rss_mb") or 0 for p in points], "s--", color="tab:orange", label="RSS MB"
    )
    right.set_ylabel("dispatcher RSS (MB)", fontsize=8, color="tab:orange")
    right.tick_params(labelsize=7)


def write_all(doc: dict[str, Any], out_dir: Path, docs_page: Path | None) -> list[Path]:
    problems = check(doc)
    if problems:
        raise ValueError(f"results do not have the documented form: {problems}")
    written = [*write_json(doc, out_dir), plot(doc, out_dir / "latest.png")]
    if docs_page is not None:
        update_docs(doc, docs_page)
        written.append(docs_page)
    return written


# ------------------------------------------------------------------------- make bench-scale


def write_scale(sections: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """The scale case's figures (`make bench-scale`, `make bench-scaleout`):
    scale-latest.json and a dated copy (scale-<now>.json) in `out_dir`. Each section
    ("scale", "scaleout") carries its own `started_at`; a run that measured only some sections
    replaces those and keeps the others of scale-latest.json (the dated copy has both too)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    latest = out_dir / "scale-latest.json"
    doc: dict[str, Any] = {}
    if latest.exists():
        try:
            doc = json.loads(latest.read_text())
        except ValueError:
            doc = {}
    now = datetime.now(UTC)
    doc.update(sections)
    doc["machine"] = machine()
    doc["written_at"] = now.isoformat()
    text = json.dumps(doc, indent=2) + "\n"
    dated = out_dir / f"scale-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    latest.write_text(text)
    dated.write_text(text)
    return latest, dated
