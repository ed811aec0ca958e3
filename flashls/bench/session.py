"""`flashls bench session`: a headless editing session over JSON-RPC, with several files
open and the user moving between places, to measure what an editor's user sees.

The plan comes from `session_plan.py`, the editors' behaviour from `session_editor.py`,
the clock from `session_drive.py`, the figures from `session_metrics.py`; this module
starts the servers, runs the variants and prints, writes and plots the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashls import __version__
from flashls.bench import report, trace
from flashls.bench.client import LspClient, ServerError
from flashls.bench.latency import (
    BenchError,
    initialize_server,
    run_command,
    wait_until_ready,
)
from flashls.bench.session_drive import SessionDriver, SessionLog
from flashls.bench.session_editor import EDITORS, Timing
from flashls.bench.session_metrics import (
    PlaceResult,
    place_results,
    request_summary,
    rss_summary,
    token_summary,
    visibility_summary,
)
from flashls.bench.session_plan import (
    PlanError,
    SessionPlan,
    build_plan,
    default_files,
    describe,
    load_files,
)

CANDIDATE = "flashls"


@dataclass(frozen=True)
class SessionConfig:
    """The session to play, against which servers, and how."""

    files: tuple[str, ...] = ()
    file_count: int = 5
    places: int = 15
    returns: int = 5
    seed: int = 0
    max_chars: int = 40
    editor: str = "vscode"
    focus: bool = True
    read_ms: float = 2000.0
    interval_ms: float = 150.0
    linger_ms: float = 1000.0
    baseline: bool = True
    baseline_args: tuple[str, ...] = ()
    # Starts the baseline instead of `python -m flashls serve` (e.g. an older checkout).
    baseline_command: tuple[str, ...] = ()
    server_args: tuple[str, ...] = ()
    workspace: str = ""  # a folder the editor has open (workspaceFolders), or none
    out_dir: str = "bench/reports"
    request_timeout_s: float = 30.0
    startup_timeout_s: float = 300.0

    @property
    def timing(self) -> Timing:
        """The user's pace."""
        return Timing(self.read_ms, self.interval_ms, self.linger_ms)


@dataclass(frozen=True)
class Variant:
    """One server to run the plan against, and whether the editor sends didFocus to it."""

    name: str
    command: tuple[str, ...]
    focus: bool


@dataclass
class VariantRun:
    """One variant's run: how its server started and the session's log."""

    variant: Variant
    startup_ms: float
    warmup_ms: float
    log: SessionLog


def variants(config: SessionConfig) -> list[Variant]:
    """The candidate, and the baseline: the same server without didFocus by default, or
    with `--baseline-arg` flags added, or another command's server (both with the
    candidate's focus setting)."""
    base = (sys.executable, "-m", "flashls", "serve", *config.server_args)
    chosen = [Variant(CANDIDATE, base, config.focus)]
    if not config.baseline:
        return chosen
    if config.baseline_command:
        chosen.append(Variant("baseline", (*config.baseline_command, *config.server_args,
                                           *config.baseline_args), config.focus))
    elif config.baseline_args:
        chosen.append(Variant("baseline", (*base, *config.baseline_args), config.focus))
    else:
        chosen.append(Variant("no-focus", base, False))
    return chosen


def make_plan(config: SessionConfig) -> SessionPlan:
    """The seeded plan for this config (files from --files or the standard library)."""
    try:
        paths = (trace.collect_files(config.files) if config.files
                 else default_files(config.file_count, config.seed))
        return build_plan(load_files(paths), config.places, config.returns, config.seed,
                          config.max_chars)
    except (FileNotFoundError, PlanError) as error:
        raise BenchError(str(error)) from error


async def run_variant(variant: Variant, plan: SessionPlan, config: SessionConfig) -> VariantRun:
    """Start one server, warm it up, play the session, shut it down."""
    started = time.perf_counter()
    client = await LspClient.start(variant.command)
    try:
        await initialize_server(client, config.startup_timeout_s, config.workspace)
        ready = time.perf_counter()
        await wait_until_ready(client, config.startup_timeout_s)
        warm = time.perf_counter()
        driver = SessionDriver(client, plan, config.editor, variant.focus, config.timing,
                               config.request_timeout_s)
        log = await driver.run()
        await client.close()
    except (ServerError, BenchError) as error:
        raise BenchError(client.failure(f"{variant.name} server", variant.command,
                                        error)) from error
    finally:
        await client.kill()
    return VariantRun(variant, (ready - started) * 1000, (warm - ready) * 1000, log)


async def run_session(config: SessionConfig) -> dict[str, Any]:
    """Every variant over the same plan; the payload the JSON file holds."""
    plan = make_plan(config)
    runs = [await run_variant(variant, plan, config) for variant in variants(config)]
    return build_payload(config, plan, runs)


def summarize(run: VariantRun) -> tuple[dict[str, Any], list[PlaceResult]]:
    """The figures of one variant's run, and its per-place results."""
    places = place_results(run.log.visits, run.log.requests)
    summary = {**visibility_summary(places), "requests": request_summary(run.log.requests),
               "tokens": token_summary(run.log.statuses),
               "rss_mb": rss_summary(run.log.rss_samples_mb),
               "notifications": run.log.notifications}
    return summary, places


RATIO_FIGURES = (("visible_rate",), ("correct_visible_rate",),
                 ("first_suggestion_ms", "new", "p50"), ("first_suggestion_ms", "new", "p90"),
                 ("first_suggestion_ms", "return", "p50"),
                 ("first_suggestion_ms", "return", "p90"),
                 ("requests", "latency_ms", "p50"), ("requests", "latency_ms", "p90"),
                 ("tokens", "evaluated_tokens"), ("tokens", "background_evaluated_tokens"))


def figure(summary: Mapping[str, Any], path: Sequence[str]) -> Any:
    """A nested value of a summary, None where missing."""
    value: Any = summary
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def compare(candidate: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """candidate / baseline for the headline figures (None where either is missing or 0)."""
    ratios: dict[str, float | None] = {}
    for path in RATIO_FIGURES:
        ours, theirs = figure(candidate, path), figure(baseline, path)
        ratios[".".join(path)] = (ours / theirs if isinstance(ours, int | float)
                                  and isinstance(theirs, int | float) and theirs else None)
    return ratios


def build_payload(config: SessionConfig, plan: SessionPlan,
                  runs: Sequence[VariantRun]) -> dict[str, Any]:
    """Config, plan, per-variant summaries, places and requests, and the comparison."""
    variant_payloads: dict[str, dict[str, Any]] = {}
    for run in runs:
        summary, places = summarize(run)
        variant_payloads[run.variant.name] = {
            "server_command": list(run.variant.command), "focus": run.variant.focus,
            "startup_ms": run.startup_ms, "warmup_ms": run.warmup_ms, "summary": summary,
            "places": [_place_json(place) for place in places],
            "visits": [dataclasses.asdict(visit) for visit in run.log.visits],
            "requests": [dataclasses.asdict(request) for request in run.log.requests],
            "statuses": run.log.statuses}
    names = list(variant_payloads)
    comparison = (compare(variant_payloads[names[0]]["summary"],
                          variant_payloads[names[1]]["summary"]) if len(names) > 1 else None)
    return {
        "benchmark": "session", "flashls_version": __version__,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": dataclasses.asdict(config), "python": sys.version.split()[0],
        "platform": platform.platform(),
        "files": [file.path for file in plan.files], "visits": describe(plan),
        "variants": variant_payloads, "comparison": comparison,
    }


def _place_json(place: PlaceResult) -> dict[str, Any]:
    return {"visit": place.visit, "is_return": place.is_return,
            "first_suggestion_ms": place.first_suggestion_ms,
            "first_suggestion_source": place.first_suggestion_source,
            "first_answer_tokens": place.first_answer_tokens,
            "visible": [view.shown is not None for view in place.keystrokes],
            "correct": [view.correct for view in place.keystrokes]}


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _count(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def table_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The printed figures of one variant, label and text."""
    rows = [("keystrokes", _count(summary["keystrokes"])),
            ("visible rate", _percent(summary["visible_rate"])),
            ("correct-visible rate", _percent(summary["correct_visible_rate"]))]
    for kind in ("new", "return"):
        times = summary["first_suggestion_ms"][kind]
        rows += [(f"first suggestion p50 ms ({kind})", _ms(times["p50"])),
                 (f"first suggestion p90 ms ({kind})", _ms(times["p90"])),
                 (f"never shown ({kind})",
                  f'{summary["never_shown"][kind]}/{summary["places"][kind]}'),
                 (f"first shown from cache ({kind})",
                  f'{summary["first_from_cache"][kind]}/{summary["places"][kind]}'),
                 (f"first-answer eval tokens p50 ({kind})",
                  _count(summary["first_answer_tokens"][kind]["p50"]))]
    requests, tokens, rss = summary["requests"], summary["tokens"], summary["rss_mb"]
    rows += [(f"requests {name}", _count(requests[key])) for name, key in (
        ("sent", "sent"), ("answered", "answered"), ("answered in time", "answered_in_time"),
        ("cancelled", "cancelled"), ("empty", "empty"), ("errors", "error"),
        ("timeouts", "timeout"), ("from cache", "cache_answers"))]
    rows += [("latency p50 ms", _ms(requests["latency_ms"]["p50"])),
             ("latency p90 ms", _ms(requests["latency_ms"]["p90"])),
             ("eval tokens (answers)", _count(tokens["evaluated_tokens"])),
             ("eval tokens (background)", _count(tokens["background_evaluated_tokens"])),
             ("prompt tokens/s", _ms(tokens["prompt_tokens_per_s"])),
             ("RSS before MB", _ms(rss["before"])), ("RSS after MB", _ms(rss["after"])),
             ("RSS peak MB", _ms(rss["peak"])),
             ("didFocus sent", _count(summary["notifications"].get("textDocument/didFocus",
                                                                   0)))]
    return rows


def format_table(payload: Mapping[str, Any]) -> str:
    """Variants side by side, and candidate / baseline where there is a baseline."""
    columns = {name: dict(table_rows(variant["summary"]))
               for name, variant in payload["variants"].items()}
    first = next(iter(payload["variants"].values()))["summary"]
    labels = [label for label, _ in table_rows(first)]
    ratios = _ratio_column(payload)
    width = max(len(label) for label in labels) + 2
    header = " " * width + "".join(f"{name:>12}" for name in columns)
    lines = [header + (f"{'ratio':>10}" if ratios else "")]
    for label in labels:
        line = f"{label:<{width}}" + "".join(f"{column[label]:>12}"
                                            for column in columns.values())
        lines.append(line + (f"{ratios.get(label, ''):>10}" if ratios else ""))
    return "\n".join(lines)


_RATIO_LABELS = {
    "visible_rate": "visible rate", "correct_visible_rate": "correct-visible rate",
    "first_suggestion_ms.new.p50": "first suggestion p50 ms (new)",
    "first_suggestion_ms.new.p90": "first suggestion p90 ms (new)",
    "first_suggestion_ms.return.p50": "first suggestion p50 ms (return)",
    "first_suggestion_ms.return.p90": "first suggestion p90 ms (return)",
    "requests.latency_ms.p50": "latency p50 ms", "requests.latency_ms.p90": "latency p90 ms",
    "tokens.evaluated_tokens": "eval tokens (answers)",
    "tokens.background_evaluated_tokens": "eval tokens (background)"}


def _ratio_column(payload: Mapping[str, Any]) -> dict[str, str]:
    comparison = payload.get("comparison")
    if not comparison:
        return {}
    return {_RATIO_LABELS[key]: "-" if value is None else f"x{value:.2f}"
            for key, value in comparison.items()}


def write_outputs(payload: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """`session-<timestamp>.json` and the matching `.png` in `out_dir`."""
    json_path, plot_path = report.report_paths(out_dir, "session")
    report.write_json(json_path, payload)
    write_plot(plot_path, payload)
    return json_path, plot_path


def write_plot(path: Path, payload: Mapping[str, Any]) -> None:
    """Time to the first suggestion per visit, and the visible share by characters typed."""
    from matplotlib.figure import Figure  # imported late: matplotlib takes a while to load

    figure_ = Figure(figsize=(11, 4.5), layout="constrained")
    first_axes, visible_axes = figure_.subplots(1, 2)
    none_at = _none_shown_height(payload)
    for index, (name, variant) in enumerate(payload["variants"].items()):
        _plot_first_suggestions(first_axes, name, variant["places"], f"C{index}",
                                0.15 * index, none_at)
        shares = _visible_by_typed(variant["places"])
        visible_axes.plot(list(shares), list(shares.values()), marker=".", color=f"C{index}",
                          label=name)
    first_axes.axhline(none_at, color="grey", linestyle=":", linewidth=1)
    first_axes.set(xlabel="visit (o new place, x return, ^ on the dotted line: none shown)",
                   ylabel="ms from the first keystroke",
                   title="Time to the first suggestion at each place", ylim=(0, none_at * 1.1))
    visible_axes.set(xlabel="characters typed at the place",
                     ylabel="share of places showing a suggestion", ylim=(0, 1.05),
                     title="Suggestion visible while typing")
    for axes in (first_axes, visible_axes):
        axes.grid(True, alpha=0.3)
        axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure_.savefig(path, dpi=110)


def _plot_first_suggestions(axes: Any, name: str, places: Sequence[Mapping[str, Any]],
                            color: str, offset: float, none_at: float) -> None:
    """One marker per visit, shifted by `offset` so variants do not hide each other; a
    visit where nothing showed gets a triangle at `none_at`."""
    shown = [p for p in places if p["first_suggestion_ms"] is not None]
    for is_return, marker in ((False, "o"), (True, "x")):
        group = [p for p in shown if p["is_return"] == is_return]
        if not group:
            continue
        axes.scatter([p["visit"] + offset for p in group],
                     [p["first_suggestion_ms"] for p in group], marker=marker, color=color,
                     label=f"{name} ({'returns' if is_return else 'new'})")
    missing = [p["visit"] + offset for p in places if p["first_suggestion_ms"] is None]
    if missing:
        axes.scatter(missing, [none_at] * len(missing), marker="^", color=color,
                     label=f"{name} (none shown)")


def _none_shown_height(payload: Mapping[str, Any]) -> float:
    """Above every first-suggestion time: where visits without one are drawn."""
    times = [float(place["first_suggestion_ms"]) for variant in payload["variants"].values()
             for place in variant["places"] if place["first_suggestion_ms"] is not None]
    return max([*times, 100.0]) * 1.15


def _visible_by_typed(places: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    counts: dict[int, list[bool]] = {}
    for place in places:
        for typed, visible in enumerate(place["visible"], start=1):
            counts.setdefault(typed, []).append(visible)
    return {typed: sum(flags) / len(flags) for typed, flags in sorted(counts.items())}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `flashls bench session`."""
    defaults = SessionConfig()
    parser.add_argument("--files", nargs="+", default=[], metavar="PATH",
                        help="files to open (directories give their source files); default: "
                             "a seeded choice of --file-count standard-library .py files of "
                             "150-1500 lines")
    parser.add_argument("--file-count", type=int, default=defaults.file_count,
                        help="how many standard-library files without --files "
                             "(default: %(default)s)")
    parser.add_argument("--places", type=int, default=defaults.places,
                        help="visits across the files (default: %(default)s)")
    parser.add_argument("--returns", type=int, default=defaults.returns,
                        help="how many of the visits go back to an earlier place "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the plan (default: %(default)s)")
    parser.add_argument("--max-chars", type=int, default=defaults.max_chars,
                        help="re-type at most this many characters at a place "
                             "(default: %(default)s)")
    parser.add_argument("--editor", choices=EDITORS, default=defaults.editor,
                        help="which editor's requests to imitate (default: %(default)s)")
    parser.add_argument("--focus", action=argparse.BooleanOptionalAction,
                        default=defaults.focus,
                        help="send textDocument/didFocus on landing at a place and when the "
                             "cursor has rested 500 ms (default: on)")
    parser.add_argument("--read-ms", type=float, default=defaults.read_ms,
                        help="pause between landing at a place and typing "
                             "(default: %(default)s)")
    parser.add_argument("--interval-ms", type=float, default=defaults.interval_ms,
                        help="time between keystrokes (default: %(default)s)")
    parser.add_argument("--linger-ms", type=float, default=defaults.linger_ms,
                        help="time at a place after its last keystroke (default: %(default)s)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction,
                        default=defaults.baseline,
                        help="play the same plan against a second server (default: on)")
    parser.add_argument("--baseline-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for the baseline's `flashls serve`, repeatable; "
                             "without any, the baseline is the same server without didFocus")
    parser.add_argument("--baseline-command", default="", metavar="CMD",
                        help="start the baseline with this command instead of `python -m "
                             "flashls serve` (split like a shell would), e.g. an older "
                             "checkout's: 'env PYTHONPATH=/tmp/old python -P -m flashls serve'")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `flashls serve`, repeatable "
                             "(e.g. --server-arg=--engine --server-arg=fake)")
    parser.add_argument("--workspace", default="", metavar="DIR",
                        help="the folder the editor has open (sent as workspaceFolders), "
                             "e.g. the package --files names, for context from other files "
                             "(default: none)")
    parser.add_argument("--out", default=defaults.out_dir, metavar="DIR",
                        help="where the JSON and PNG go (default: %(default)s)")
    parser.add_argument("--request-timeout-s", type=float, default=defaults.request_timeout_s,
                        help="longest wait for one answer (default: %(default)s)")
    parser.add_argument("--startup-timeout-s", type=float, default=defaults.startup_timeout_s,
                        help="longest wait for initialize and the warm-up request, which "
                             "may load the model (default: %(default)s)")


def config_from_arguments(arguments: argparse.Namespace) -> SessionConfig:
    """A SessionConfig from parsed options; nonsense values raise BenchError."""
    if arguments.places < 1 or arguments.returns < 0 or arguments.file_count < 2:
        raise BenchError("--places must be at least 1, --returns at least 0 and "
                         "--file-count at least 2")
    if arguments.max_chars < 8:
        raise BenchError("--max-chars must be at least 8")
    if min(arguments.interval_ms, arguments.request_timeout_s) <= 0 \
            or min(arguments.read_ms, arguments.linger_ms) < 0:
        raise BenchError("--interval-ms and --request-timeout-s must be positive, "
                         "--read-ms and --linger-ms not negative")
    if arguments.workspace and not Path(arguments.workspace).is_dir():
        raise BenchError(f"--workspace {arguments.workspace}: not a directory")
    return SessionConfig(
        files=tuple(arguments.files), file_count=arguments.file_count,
        places=arguments.places, returns=arguments.returns, seed=arguments.seed,
        max_chars=arguments.max_chars, editor=arguments.editor, focus=arguments.focus,
        read_ms=arguments.read_ms, interval_ms=arguments.interval_ms,
        linger_ms=arguments.linger_ms, baseline=arguments.baseline,
        baseline_args=tuple(arguments.baseline_arg),
        baseline_command=tuple(shlex.split(arguments.baseline_command)),
        server_args=tuple(arguments.server_arg), workspace=arguments.workspace,
        out_dir=arguments.out,
        request_timeout_s=arguments.request_timeout_s,
        startup_timeout_s=arguments.startup_timeout_s)


def _describe(config: SessionConfig, payload: dict[str, Any]) -> str:
    return (f"flashls bench session: {len(payload['visits'])} visits over "
            f"{len(payload['files'])} files, editor {config.editor}, "
            f"focus {'on' if config.focus else 'off'}\n{format_table(payload)}")


def handler(arguments: argparse.Namespace) -> int:
    """Run the session, print the table, write the JSON and PNG."""
    return run_command("session", arguments, config_from_arguments, run_session,
                       write_outputs, _describe)
