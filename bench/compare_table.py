"""The before/after table of bench/compare.py: each figure of the old and the new revision,
their ratio, and the floor commit measured beside each."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: A figure's section results -> its value (None when the run has none).
Getter = Callable[[dict[str, Any]], float | None]


@dataclass(frozen=True)
class Metric:
    """One row of the table: a number read from one section of a run's results."""

    section: str
    label: str
    unit: str
    get: Getter
    higher_is_better: bool = False
    #: Scales with the floor commit (a latency or a throughput of durable commits): the
    #: table also gives the ratio with each side divided by its own floor.
    per_commit: bool = False


def _key(*path: str) -> Getter:
    def get(section: dict[str, Any]) -> float | None:
        value: Any = section
        for part in path:
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return None if value is None else float(value)

    return get


def _waiting_rss(section: dict[str, Any]) -> float | None:
    # As the run's own table: the larger of the readings when all were suspended and 2 s on.
    return max(section["settled_2s"]["rss_mb"], section["all_suspended"]["rss_mb"])


def _throughput(section: str, label: str) -> tuple[Metric, Metric]:
    """A throughput figure's rows: workflows/s, and CPU per checkout."""
    return (
        Metric(section, label, "wf/s", _key("per_s"), higher_is_better=True, per_commit=True),
        Metric(section, "  cpu per checkout", "ms", _key("cpu_ms_per_checkout")),
    )


METRICS: tuple[Metric, ...] = (
    Metric("sequential", "sequential checkout, p50", "ms", _key("p50_ms"), per_commit=True),
    Metric("sequential", "sequential checkout, p99", "ms", _key("p99_ms"), per_commit=True),
    Metric("sequential", "sequential, cpu per checkout", "ms", _key("cpu_ms_per_checkout")),
    Metric("steps", "step overhead", "µs/step", _key("per_step_us"), per_commit=True),
    Metric("steps", "step overhead, cpu per step", "µs", _key("cpu_us_per_step")),
    *_throughput("throughput_sync", "throughput, sync def, app.start loop"),
    *_throughput("throughput_sync_gather", "throughput, sync def, gather"),
    *_throughput("throughput_async", "throughput, async def, gather"),
    *_throughput("throughput_async_loop", "throughput, async def, app.start loop"),
    Metric("recovery", "recovery", "s", _key("seconds")),
    Metric("recovery", "recovery, max", "s", _key("seconds_max")),
    Metric("waiting", "waiting cost, worker RSS", "MB", _waiting_rss),
    Metric("waiting", "waiting cost, worker threads", "", _key("settled_2s", "threads")),
)


def multiprocess_metrics(section: dict[str, Any]) -> list[Metric]:
    """One row per (workflow, worker count) of the multi-process figure."""
    metrics = []
    for key, run in section.get("runs", {}).items():
        kind = "sync def" if run["workflow"] == "checkout" else "async def"
        metrics.append(
            Metric(
                "multiprocess",
                f"multi-process, {kind}, {run['workers']} worker(s)"
                + (", app.start loop" if run.get("submission") == "loop" else ""),
                "wf/s",
                _key("runs", key, "per_s"),
                higher_is_better=True,
                per_commit=True,
            )
        )
    return metrics


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _values(metric: Metric, sections: list[dict[str, Any]]) -> list[float]:
    found = (metric.get(s) for s in sections)
    return [v for v in found if v is not None]


def rows(
    old: dict[str, list[dict[str, Any]]], new: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The table of one store. ``old`` and ``new`` map each section to its results in every
    round (usually one); a section that failed on a side is missing there."""
    metrics = list(METRICS)
    for side in (old, new):
        for section in side.get("multiprocess", [])[:1]:
            for metric in multiprocess_metrics(section):
                if metric.label not in {m.label for m in metrics}:
                    metrics.append(metric)
    out = []
    for metric in metrics:
        if metric.section not in old and metric.section not in new:
            continue
        o_sections, n_sections = old.get(metric.section, []), new.get(metric.section, [])
        o, n = _median(_values(metric, o_sections)), _median(_values(metric, n_sections))
        o_load = _median([s["foreign_cores"] for s in o_sections if "foreign_cores" in s])
        n_load = _median([s["foreign_cores"] for s in n_sections if "foreign_cores" in s])
        o_floor = _median([s["floor_us"] for s in o_sections])
        n_floor = _median([s["floor_us"] for s in n_sections])
        ratio = n / o if o and n is not None else None
        adjusted = None
        if metric.per_commit and ratio is not None and o_floor and n_floor:
            # Each side in its own floor commits: a throughput times the floor, a latency
            # divided by it, so that a drift of the disk between the two runs cancels.
            scale = n_floor / o_floor
            adjusted = ratio * scale if metric.higher_is_better else ratio / scale
        out.append(
            {
                "figure": metric.label,
                "section": metric.section,
                "unit": metric.unit,
                "old": o,
                "new": n,
                "ratio": ratio,
                "ratio_floor_adjusted": adjusted,
                "higher_is_better": metric.higher_is_better,
                "old_floor_us": o_floor,
                "new_floor_us": n_floor,
                # Cores other processes used during the figure, on each side.
                "old_other_cores": o_load,
                "new_other_cores": n_load,
            }
        )
    return out


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "failed"
    if value.is_integer() and abs(value) < 1e6:
        return f"{value:.0f} {unit}".rstrip()
    if abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def _change(row: dict[str, Any]) -> str:
    # Judged on the plain ratio: a quick run's floor brackets are too short to correct by.
    ratio = row["ratio"]
    if ratio is None:
        return ""
    better = ratio > 1 if row["higher_is_better"] else ratio < 1
    if abs(ratio - 1) < 0.05:
        return "same (within 5 %)"
    return f"{abs(ratio - 1) * 100:.0f} % {'better' if better else 'worse'}"


def _cores(old: float | None, new: float | None) -> str:
    return "/".join("?" if c is None else f"{c:.2f}" for c in (old, new))


def markdown(
    store_rows: list[dict[str, Any]], title: str, old_label: str, new_label: str
) -> list[str]:
    """A markdown table of one store's rows."""
    header = [
        "figure",
        f"old {old_label}",
        f"new {new_label}",
        "new/old",
        "new/old in floors",
        "change",
        "old floor µs",
        "new floor µs",
        "other cores old/new",
    ]
    lines = [
        f"### {title}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * 4 + ["---"] + ["---:"] * 3) + "|",
    ]
    for row in store_rows:
        cells = [
            row["figure"],
            _number(row["old"], row["unit"]),
            _number(row["new"], row["unit"]),
            "" if row["ratio"] is None else f"{row['ratio']:.2f}x",
            "" if row["ratio_floor_adjusted"] is None else f"{row['ratio_floor_adjusted']:.2f}x",
            _change(row),
            _number(row["old_floor_us"]) if row["old_floor_us"] is not None else "",
            _number(row["new_floor_us"]) if row["new_floor_us"] is not None else "",
            _cores(row["old_other_cores"], row["new_other_cores"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
