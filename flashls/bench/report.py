"""Benchmark statistics and their faces: the printed table, the JSON file and the PNG plot.

Works on `RequestRecord`s only; nothing here starts servers or times anything.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flashls.bench.replay import RequestRecord

PERCENTILES = (50, 90, 99)
SPEED_UP_STATS = ("p50", "p90", "p99", "max", "mean")
BREAKDOWN_STAGES = ("queue", "context", "tokenize", "prompt", "generate", "postprocess")
OVERHEAD_STAGES = ("context_ms", "postprocess_ms", "tokenize_ms")  # plus jsonrpc_ms
RSS_GROWTH_LIMIT_MB = 50.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation (numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_stats(latencies: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/max/mean of latencies in ms."""
    stats: dict[str, float | None] = {f"p{q}": percentile(latencies, q) for q in PERCENTILES}
    stats["max"] = max(latencies) if latencies else None
    stats["mean"] = sum(latencies) / len(latencies) if latencies else None
    return stats


def rate(count: int, total: int) -> float | None:
    """count / total; None when there is nothing to count."""
    return count / total if total else None


def mean(values: Sequence[float]) -> float | None:
    """The arithmetic mean; None when empty."""
    return sum(values) / len(values) if values else None


def p50_p90(values: Iterable[float | None]) -> dict[str, float | None]:
    """Median and 90th percentile of the values present."""
    present = [value for value in values if value is not None]
    return {"p50": percentile(present, 50), "p90": percentile(present, 90)}


def summarize(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """Counts, latency statistics and hit rates of one variant's records."""
    latencies = [r.latency_ms for r in records if r.latency_ms is not None]
    eligible = [r for r in records if r.rest]
    outcomes = {name: sum(r.outcome == name for r in records)
                for name in ("answered", "late", "cancelled", "timeout", "error")}
    hits = sum(r.hit for r in eligible)
    partial_hits = sum(r.partial_hit for r in eligible)
    suggested = sum(bool(r.suggestion) for r in records if r.outcome in ("answered", "late"))
    stale = sum(r.stale_shown for r in records)
    fresh = sum(r.outcome == "answered" and bool(r.suggestion) for r in records)
    return {
        "requests": len(records), **outcomes, "latency_ms": latency_stats(latencies),
        "eligible": len(eligible), "hits": hits, "partial_hits": partial_hits,
        "hit_rate": rate(hits, len(eligible)),
        "partial_hit_rate": rate(partial_hits, len(eligible)),
        "suggestions": suggested, "stale_shown": stale, "stale_rate": rate(stale, suggested),
        "fresh_shown": fresh, "fresh_shown_rate": rate(fresh, len(records)),
        **server_summary(records),
    }


def server_summary(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """Cache hits, evaluated tokens, time breakdown and overhead, from the servers' statuses."""
    answered = [r for r in records if r.outcome in ("answered", "late")]
    cache_hits = sum(r.source == "cache" for r in answered)
    model = [r for r in answered if r.source == "model" and r.timings is not None]
    cut = sum(r.finish == "deadline" for r in model)
    continued = sum(r.finish in ("continued", "joined") for r in answered)
    return {
        # Answers cut by the time budget, and later keystrokes answered by the background
        # continuation of such an answer: ready in the cache, or waited for ("joined"; in
        # human mode also the generation of a cancelled earlier request).
        "cut_by_budget": cut, "continued_hits": continued,
        "joined_hits": sum(r.finish == "joined" for r in answered),
        "continued_per_cut": rate(continued, cut),
        "with_status": sum(r.source is not None for r in answered),
        "cache_hits": cache_hits, "cache_hit_rate": rate(cache_hits, len(answered)),
        "model_answers": len(model),
        "evaluated_tokens": p50_p90([r.evaluated_tokens for r in model]),
        "evaluated_tokens_warm": p50_p90([r.evaluated_tokens for r in model
                                          if r.keystroke > 1]),
        "generated_tokens": p50_p90([r.generated_tokens for r in model]),
        "breakdown_p50_ms": breakdown_p50(model),
        "overhead_share_p50": percentile(
            [share for share in map(overhead_share, model) if share is not None], 50),
    }


def breakdown_p50(model_answers: Sequence[RequestRecord]) -> dict[str, float | None]:
    """Median ms of each server stage, and of the JSON-RPC remainder, over model answers."""
    medians = {stage: percentile([r.timings[f"{stage}_ms"] for r in model_answers
                                  if r.timings and f"{stage}_ms" in r.timings], 50)
               for stage in BREAKDOWN_STAGES}
    medians["jsonrpc"] = percentile([r.jsonrpc_ms for r in model_answers
                                     if r.jsonrpc_ms is not None], 50)
    return medians


def overhead_share(record: RequestRecord) -> float | None:
    """(context + postprocess + tokenize + JSON-RPC ms) / client latency of one request."""
    # Queueing and the model's own work are left out: this is what the code around it costs.
    timings = record.timings or {}
    if record.jsonrpc_ms is None or not record.response_ms:
        return None
    if any(stage not in timings for stage in OVERHEAD_STAGES):
        return None
    overhead = sum(timings[stage] for stage in OVERHEAD_STAGES) + record.jsonrpc_ms
    return overhead / record.response_ms


def rss_summary(samples_mb: Sequence[float | None]) -> dict[str, Any]:
    """The server's RSS after warm-up, at the end, its growth between and the peak sampled."""
    present = [sample for sample in samples_mb if sample is not None]
    first, last = samples_mb[0] if samples_mb else None, samples_mb[-1] if samples_mb else None
    growth = last - first if first is not None and last is not None else None
    return {"after_warmup": first, "end": last, "growth": growth,
            "peak": max(present) if present else None, "samples": len(present),
            "growth_limit": RSS_GROWTH_LIMIT_MB,
            "within_limit": None if growth is None else growth < RSS_GROWTH_LIMIT_MB}


def compare(candidate: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """Speed-ups (baseline latency / candidate latency) and hit-rate differences."""
    speed_ups: dict[str, float | None] = {}
    for stat in SPEED_UP_STATS:
        ours, theirs = candidate["latency_ms"][stat], baseline["latency_ms"][stat]
        speed_ups[stat] = theirs / ours if ours and theirs is not None else None
    return {"speed_up": speed_ups,
            "hit_rate_difference": _difference(candidate["hit_rate"], baseline["hit_rate"]),
            "partial_hit_rate_difference": _difference(candidate["partial_hit_rate"],
                                                       baseline["partial_hit_rate"])}


def _difference(ours: float | None, theirs: float | None) -> float | None:
    return ours - theirs if ours is not None and theirs is not None else None


def fixed(value: float | None, digits: int = 1) -> str:
    """`value` with `digits` decimals, "-" for none."""
    return "-" if value is None else f"{value:.{digits}f}"


def _tokens(value: float | None) -> str:
    return "-" if value is None else f"{round(value, 1):g}"


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal, "-" for none."""
    return "-" if value is None else f"{100 * value:.1f}%"


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.rjust(width) if column else cell.ljust(width)
                      for column, (cell, width) in enumerate(zip(row, widths, strict=True)))
            for row in rows]


def _table_rows(variant: Mapping[str, Any], human: bool) -> list[tuple[str, str]]:
    summary = variant["summary"]
    latency = summary["latency_ms"]
    rows = [("requests", str(summary["requests"])),
            ("answered in time" if human else "answered", str(summary["answered"]))]
    if human:
        rows += [("answered late", str(summary["late"])),
                 ("cancelled", str(summary["cancelled"]))]
    rows += [("timeouts", str(summary["timeout"]))]
    rows += [(f"{stat} ms", fixed(latency[stat])) for stat in ("p50", "p90", "p99", "max")]
    rows += [("hit rate", percent(summary["hit_rate"])),
             ("partial-hit rate", percent(summary["partial_hit_rate"]))]
    if human:
        rows += [("fresh shown", percent(summary["fresh_shown_rate"])),
                 ("stale shown", percent(summary["stale_rate"]))]
    rows += _server_rows(summary)
    rows += [("startup ms", fixed(variant["startup_ms"])),
             ("warm-up ms", fixed(variant["warmup_ms"]))]
    rows += _rss_rows(variant.get("rss_mb", {}))
    return rows


def _server_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the servers' flashls/status notifications tell: cache, tokens, where time goes."""
    evaluated, warm = summary["evaluated_tokens"], summary["evaluated_tokens_warm"]
    rows = [("cache-hit rate", percent(summary["cache_hit_rate"])),
            ("cut by budget", str(summary["cut_by_budget"])),
            ("continued hits (joined)",
             f'{summary["continued_hits"]} ({summary.get("joined_hits", 0)})'),
            ("eval tokens p50", _tokens(evaluated["p50"])),
            ("eval tokens p90", _tokens(evaluated["p90"])),
            ("warm eval tokens p50", _tokens(warm["p50"])),
            ("warm eval tokens p90", _tokens(warm["p90"]))]
    rows += [(f"p50 {stage} ms", fixed(value))
             for stage, value in summary["breakdown_p50_ms"].items()]
    rows += [("overhead share p50", percent(summary["overhead_share_p50"]))]
    return rows


def _rss_rows(rss: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [("RSS warm MB", fixed(rss.get("after_warmup"))),
            ("RSS growth MB", fixed(rss.get("growth")))]


def format_table(payload: Mapping[str, Any]) -> str:
    """The short comparison printed at the end of a run."""
    variants = payload["variants"]
    human = payload["config"]["mode"] == "human"
    columns = {name: dict(_table_rows(variant, human)) for name, variant in variants.items()}
    labels = [label for label, _ in _table_rows(next(iter(variants.values())), human)]
    width = max(len(label) for label in labels) + 2
    column_width = max(12, *(len(name) + 2 for name in columns))
    lines = [" " * width + "".join(f"{name:>{column_width}}" for name in columns)]
    for label in labels:
        lines.append(f"{label:<{width}}" + "".join(f"{column[label]:>{column_width}}"
                                                  for column in columns.values()))
    lines += _comparison_lines(payload.get("comparison"))
    return "\n".join(lines)


def _comparison_lines(comparison: Mapping[str, Any] | None) -> list[str]:
    if not comparison:
        return []
    lines = [f"{stat} speed-up x{value:.2f}"
             for stat, value in comparison["speed_up"].items()
             if stat != "mean" and value is not None]
    difference = comparison["hit_rate_difference"]
    if difference is not None:
        lines.append(f"hit rate difference {100 * difference:+.1f} points")
    return lines


def plotting_missing() -> str | None:
    """What to install to draw the PNGs, when matplotlib (the `bench` extra, which the
    language server does without) is missing; None when it is there."""
    try:
        import matplotlib  # noqa: F401 - imported to see that it can be
    except ImportError:
        return ("the report's PNG needs matplotlib, which is not installed; install it "
                "with: pip install 'flashls[bench]'")
    return None


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Replace `path` with `payload` in one step, so a reader of a run still going (they
    write after every row or site) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    scratch.replace(path)


def write_plot(path: Path, latencies: Mapping[str, Sequence[float]],
               by_keystroke: Mapping[str, Mapping[int, float]]) -> None:
    """ECDF of latencies per variant (log scale, p50/p90 marked) and median per keystroke."""
    from matplotlib.figure import Figure  # imported late: matplotlib takes a while to load

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    ecdf_axes, position_axes = figure.subplots(1, 2)
    for index, (name, values) in enumerate(latencies.items()):
        color = f"C{index}"
        _plot_ecdf(ecdf_axes, name, sorted(values), color)
        medians = by_keystroke.get(name, {})
        position_axes.plot(list(medians), list(medians.values()), marker=".", color=color,
                           label=name)
    ecdf_axes.set(xscale="log", xlabel="latency (ms, log scale)", ylabel="fraction of requests",
                  title="Latency distribution (dashed p50, dotted p90)")
    _plain_log_labels(ecdf_axes.xaxis)
    position_axes.set(xlabel="characters typed on the line", ylabel="median latency (ms)",
                      title="Latency while typing", ylim=(0, None))
    for axes in (ecdf_axes, position_axes):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _plain_log_labels(axis: Any) -> None:
    """Label a log axis 1, 2, 5, 10, 20, 50... instead of 10^0 with crowded minor labels."""
    from matplotlib.ticker import FuncFormatter

    def label(value: float, _position: int) -> str:
        if value <= 0:
            return ""
        leading = round(value / 10 ** math.floor(math.log10(value)))
        return f"{value:g}" if leading in (1, 2, 5) else ""

    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(FuncFormatter(label))


def _plot_ecdf(axes: Any, name: str, ordered: list[float], color: str) -> None:
    if not ordered:
        return
    fractions = [(rank + 1) / len(ordered) for rank in range(len(ordered))]
    axes.step(ordered, fractions, where="post", color=color, label=name)
    for q, style in ((50, "--"), (90, ":")):
        value = percentile(ordered, q)
        axes.axvline(value, color=color, linestyle=style, linewidth=1)


def median_by_keystroke(records: Sequence[RequestRecord]) -> dict[int, float]:
    """Median latency for each number of characters typed on the line."""
    grouped: dict[int, list[float]] = {}
    for record in records:
        if record.latency_ms is not None:
            grouped.setdefault(record.keystroke, []).append(record.latency_ms)
    return {position: percentile(values, 50) or 0.0
            for position, values in sorted(grouped.items())}


def report_paths(out_dir: Path, name: str) -> tuple[Path, Path]:
    """`<name>-<timestamp>.json` and the matching `.png` in `out_dir`, never an existing
    report's (a second run within the same second gets a numbered name)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"{name}-{stamp}.json"
    suffix = 1
    while json_path.exists():
        json_path = out_dir / f"{name}-{stamp}-{suffix}.json"
        suffix += 1
    return json_path, json_path.with_suffix(".png")
