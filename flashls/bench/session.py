"""`flashls bench session`: a headless editing session over JSON-RPC, with several files
open and the user moving between places, to measure what an editor's user sees.

The plan comes from `session_plan.py`, the editors' behaviour from `session_editor.py`,
the clock from `session_drive.py`, the figures from `session_metrics.py`; this module
starts the servers, runs the variants and prints, writes and plots the result.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from flashls.bench import trace
from flashls.bench.harness import BenchError, run_command, run_header, serving
from flashls.bench.llama_server import (
    llama_server_binary,
    llama_server_command,
    model_file,
    started_on_free_port,
)
from flashls.bench.report import fixed, percent
from flashls.bench.session_drive import SessionDriver, SessionLog
from flashls.bench.session_editor import EDITORS, Timing
from flashls.bench.session_metrics import (
    INDEX_BUCKETS,
    LAST_BUCKET,
    PlaceResult,
    index_bucket,
    place_results,
    request_summary,
    rss_summary,
    token_summary,
    visibility_summary,
)
from flashls.bench.session_plan import (
    SHORT_VISITS,
    PlanError,
    SessionPlan,
    build_plan,
    default_files,
    describe,
    load_files,
)

CANDIDATE = "flashls"
# `--profile NAME`: option values a named setup stands for; flags given explicitly win.
PROFILES: dict[str, dict[str, Any]] = {
    "heldout": {"visit_chars": "12", "returns": 0, "read_ms": 2000.0, "interval_ms": 150.0,
                "places": 15, "cut": "start"}}
PROFILE_FIELDS = ("places", "returns", "read_ms", "interval_ms", "visit_chars", "cut")
LLAMA_SERVER_CTX = 4096  # tokens of llama-server's one slot: flashls's default n_ctx
# Its batch: on 2 cores 128 tokens take about a second, so a keystroke's cancel of a
# background prompt frees the one slot within one (with the default 2,048, a whole
# prompt of a new place: 10-20 s).
LLAMA_SERVER_BATCH = 128


@dataclass(frozen=True)
class SessionConfig:
    """The session to play, against which servers, and how."""

    files: tuple[str, ...] = ()
    file_count: int = 5
    places: int = 15
    returns: int = 5
    seed: int = 0
    max_chars: int = 40
    cut: str = "tail"  # where a visit's deletion starts: "tail" (`max_chars`) or "start"
    visit_chars: str = SHORT_VISITS  # or a number: characters typed at every place
    profile: str = ""
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
    # Start a llama-server with the default model for each variant and point flashls at it.
    llama_server: bool = False
    llama_server_threads: int = 2
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


def typed_chars_setting(visit_chars: str) -> int | None:
    """`--visit-chars`: None for the `short` distribution, else the fixed count."""
    if visit_chars == SHORT_VISITS:
        return None
    if not visit_chars.isdigit() or int(visit_chars) < 1:
        raise BenchError(f"--visit-chars takes {SHORT_VISITS!r} or a positive number, "
                         f"not {visit_chars!r}")
    return int(visit_chars)


def make_plan(config: SessionConfig) -> SessionPlan:
    """The seeded plan for this config (files from --files or the standard library)."""
    try:
        paths = (trace.collect_files(config.files) if config.files
                 else default_files(config.file_count, config.seed))
        return build_plan(load_files(paths), config.places, config.returns, config.seed,
                          config.max_chars, typed_chars_setting(config.visit_chars),
                          config.cut)
    except (FileNotFoundError, PlanError) as error:
        raise BenchError(str(error)) from error


@contextlib.asynccontextmanager
async def llama_server(config: SessionConfig) -> AsyncIterator[str]:
    """A llama-server with the default model on a free loopback port, one slot, until the
    block ends; yields its URL."""
    binary, model = llama_server_binary(""), model_file("")

    def command(port: int) -> list[str]:
        return llama_server_command(binary, model, port, 1, LLAMA_SERVER_CTX,
                                    config.llama_server_threads, LLAMA_SERVER_BATCH)

    async with started_on_free_port("llama-server", command, "/health",
                                    config.startup_timeout_s) as (_, endpoint):
        yield endpoint


@contextlib.asynccontextmanager
async def engine_arguments(config: SessionConfig) -> AsyncIterator[tuple[str, ...]]:
    """The flags pointing a variant's flashls at its inference server: none for its own
    engine; with --llama-server, a llama-server started for this variant alone (so the
    baseline does not meet a server whose prompt cache holds the candidate's prompts)."""
    if not config.llama_server:
        yield ()
        return
    async with llama_server(config) as endpoint:
        yield ("--engine", "llama-server", "--endpoint", endpoint)


async def run_variant(variant: Variant, plan: SessionPlan, config: SessionConfig) -> VariantRun:
    """Start one server, warm it up, play the session, shut it down."""
    async with serving(variant.command, f"{variant.name} server", config.startup_timeout_s,
                       config.workspace) as server:
        driver = SessionDriver(server.client, plan, config.editor, variant.focus,
                               config.timing, config.request_timeout_s)
        log = await driver.run()
    return VariantRun(variant, server.startup_ms, server.warmup_ms, log)


async def run_session(config: SessionConfig) -> dict[str, Any]:
    """Every variant over the same plan; the payload the JSON file holds."""
    plan = make_plan(config)
    runs = []
    for variant in variants(config):
        async with engine_arguments(config) as extra:
            served = dataclasses.replace(variant, command=(*variant.command, *extra))
            runs.append(await run_variant(served, plan, config))
    return build_payload(config, plan, runs)


def summarize(run: VariantRun) -> tuple[dict[str, Any], list[PlaceResult]]:
    """The figures of one variant's run (new places and returns apart), and its places."""
    places = place_results(run.log.visits, run.log.requests)
    summary = {**visibility_summary(places), "requests": request_summary(run.log.requests),
               "tokens": token_summary(run.log.statuses),
               "rss_mb": rss_summary(run.log.rss_samples_mb),
               "notifications": run.log.notifications,
               "finished": {"received": run.log.finished, "reasks": run.log.reasks}}
    return summary, places


_RATE_FIGURES = ("visible_rate", "strict_rate", "lenient_rate", "accept_chars_per_keystroke")
_GROUP_FIGURES = (*((name,) for name in _RATE_FIGURES),
                  ("blank_run", "p50"), ("blank_run", "p90"), ("blank_run", "max"),
                  ("first_suggestion_ms", "p50"), ("first_suggestion_ms", "p90"))
RATIO_FIGURES = (
    *((group, *path) for group in ("new", "return") for path in _GROUP_FIGURES),
    *((group, "by_index", index_bucket(typed), name) for group in ("new", "return")
      for typed in range(1, INDEX_BUCKETS + 2) for name in _RATE_FIGURES),
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
        **run_header("session", config),
        "files": [file.path for file in plan.files], "visits": describe(plan),
        "variants": variant_payloads, "comparison": comparison,
    }


def _place_json(place: PlaceResult) -> dict[str, Any]:
    views = place.keystrokes
    return {"visit": place.visit, "kind": "return" if place.is_return else "new",
            "is_return": place.is_return,
            "first_suggestion_ms": place.first_suggestion_ms,
            "first_suggestion_source": place.first_suggestion_source,
            "first_answer_tokens": place.first_answer_tokens,
            "blank_run": place.blank_run,
            "shown": [view.line for view in views],
            "visible": [view.visible for view in views],
            "strict": [view.strict for view in views],
            "lenient": [view.lenient for view in views],
            "accept_chars": [view.accept_chars for view in views]}


class Row(NamedTuple):
    """One line of the printed table: its label, one variant's text, and the key of its
    ratio in the comparison ("" for none)."""

    label: str
    text: str
    ratio: str = ""


TABLE_INDICES = (1, 2, 3, 4, 8, 12)  # keystroke indices printed; the JSON has them all
GROUP_TITLES = {"new": "new places",
                "return": "returns (re-type an earlier visit's text)"}


def _count(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def _three_rates(figures: Mapping[str, Any]) -> str:
    """visible/strict/lenient in whole percent, "-" for a bucket without keystrokes."""
    if not figures["keystrokes"]:
        return "-"
    return "/".join(f"{100 * figures[f'{name}_rate']:.0f}"
                    for name in ("visible", "strict", "lenient"))


def group_rows(kind: str, group: Mapping[str, Any]) -> list[Row]:
    """The rows of new places, or of returns: keystroke figures, then place figures."""
    rows = [Row(GROUP_TITLES[kind], _count(group["places"])),
            Row("  keystrokes", _count(group["keystrokes"]))]
    rows += [Row(f"  {name} rate", percent(group[f"{name}_rate"]), f"{kind}.{name}_rate")
             for name in ("visible", "strict", "lenient")]
    rows += [Row("  accept chars", _count(group["accept_chars"])),
             Row("  accept chars / keystroke", fixed(group["accept_chars_per_keystroke"], 2),
                 f"{kind}.accept_chars_per_keystroke")]
    if kind == "new":
        rows += [Row(f"  keystroke {typed}: vis/strict/len %",
                     _three_rates(group["by_index"][index_bucket(typed)]))
                 for typed in TABLE_INDICES]
    rows += [Row(f"  longest blank run {key}", _count(group["blank_run"][key]),
                 f"{kind}.blank_run.{key}") for key in ("p50", "p90", "max")]
    rows += [Row(f"  first suggestion {key} ms", fixed(group["first_suggestion_ms"][key]),
                 f"{kind}.first_suggestion_ms.{key}") for key in ("p50", "p90")]
    places = group["places"]
    return [
        *rows, Row("  never shown", f'{group["never_shown"]}/{places}'),
        Row("  first shown from cache", f'{group["first_from_cache"]}/{places}'),
        Row("  first-answer eval tokens p50", _count(group["first_answer_tokens"]["p50"]))]


def table_rows(summary: Mapping[str, Any]) -> list[Row]:
    """The printed figures of one variant: new places, returns, requests and the server."""
    rows = group_rows("new", summary["new"]) + group_rows("return", summary["return"])
    requests, tokens, rss = summary["requests"], summary["tokens"], summary["rss_mb"]
    rows += [Row(f"requests {name}", _count(requests[key])) for name, key in (
        ("sent", "sent"), ("answered", "answered"), ("answered in time", "answered_in_time"),
        ("cancelled", "cancelled"), ("empty", "empty"), ("errors", "error"),
        ("timeouts", "timeout"), ("from cache", "cache_answers"))]
    return [
        *rows,
        Row("latency p50 ms", fixed(requests["latency_ms"]["p50"]), "requests.latency_ms.p50"),
        Row("latency p90 ms", fixed(requests["latency_ms"]["p90"]), "requests.latency_ms.p90"),
        Row("eval tokens (answers)", _count(tokens["evaluated_tokens"]),
            "tokens.evaluated_tokens"),
        Row("eval tokens (background)", _count(tokens["background_evaluated_tokens"]),
            "tokens.background_evaluated_tokens"),
        Row("prompt tokens/s", fixed(tokens["prompt_tokens_per_s"])),
        Row("RSS before MB", fixed(rss["before"])), Row("RSS after MB", fixed(rss["after"])),
        Row("RSS peak MB", fixed(rss["peak"])),
        Row("didFocus sent", _count(summary["notifications"].get("textDocument/didFocus", 0))),
        Row("suggestionFinished received", _count(summary["finished"]["received"])),
        Row("asked again after it", _count(summary["finished"]["reasks"]))]


def format_table(payload: Mapping[str, Any]) -> str:
    """Variants side by side, and candidate / baseline where there is a baseline."""
    columns = [table_rows(variant["summary"]) for variant in payload["variants"].values()]
    comparison = payload.get("comparison") or {}
    width = max(len(row.label) for row in columns[0]) + 2
    header = " " * width + "".join(f"{name:>12}" for name in payload["variants"])
    lines = [header + (f"{'ratio':>10}" if comparison else "")]
    for index, row in enumerate(columns[0]):
        line = f"{row.label:<{width}}" + "".join(f"{column[index].text:>12}"
                                                for column in columns)
        if comparison and row.ratio:
            line += f"{_ratio(comparison.get(row.ratio)):>10}"
        lines.append(line)
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2f}"


def write_plot(path: Path, payload: Mapping[str, Any]) -> None:
    """Time to the first suggestion per visit; at new places, the visible, strict and
    lenient rates by keystroke index, and how many places had each longest blank run."""
    from matplotlib.figure import Figure  # imported late: matplotlib takes a while to load
    from matplotlib.ticker import MaxNLocator

    figure_ = Figure(figsize=(16, 4.8), layout="constrained")
    first_axes, index_axes, blank_axes = figure_.subplots(1, 3)
    none_at = _none_shown_height(payload)
    count = len(payload["variants"])
    for number, (name, variant) in enumerate(payload["variants"].items()):
        color = f"C{number}"
        _plot_first_suggestions(first_axes, name, variant["places"], color, 0.15 * number,
                                none_at)
        _plot_by_index(index_axes, name, variant["summary"]["new"]["by_index"], color)
        _plot_blank_runs(blank_axes, name, variant["summary"]["new"]["blank_run"]["histogram"],
                         color, (number - (count - 1) / 2) * 0.8 / count, 0.8 / count)
    first_axes.axhline(none_at, color="grey", linestyle=":", linewidth=1)
    first_axes.set(xlabel="visit (o new place, x return, ^ on the dotted line: none shown)",
                   ylabel="ms from the first keystroke",
                   title="Time to the first suggestion at each place", ylim=(0, none_at * 1.1))
    index_axes.set(xlabel=f"keystroke at a new place ({LAST_BUCKET} pooled at the right)",
                   ylabel="share of keystrokes", ylim=(0, 1.05),
                   title="Visible (solid), lenient (dashed), strict (dotted)",
                   xticks=range(1, INDEX_BUCKETS + 2),
                   xticklabels=[index_bucket(t) for t in range(1, INDEX_BUCKETS + 2)])
    longest = max([1, *(int(length) for variant in payload["variants"].values()
                        for length in variant["summary"]["new"]["blank_run"]["histogram"])])
    blank_axes.set(xlabel="longest run of keystrokes with nothing on screen",
                   ylabel="new places", title="Longest blank run per new place",
                   xlim=(-0.6, longest + 0.6))
    for axis in (blank_axes.xaxis, blank_axes.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    for axes in (first_axes, index_axes, blank_axes):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure_.savefig(path, dpi=110)


def _plot_by_index(axes: Any, name: str, buckets: Mapping[str, Mapping[str, Any]],
                   color: str) -> None:
    """One line per measure, over the keystroke indices that had keystrokes."""
    indices = [typed for typed in range(1, INDEX_BUCKETS + 2)
               if buckets[index_bucket(typed)]["keystrokes"]]
    for measure, style in (("visible", "-"), ("lenient", "--"), ("strict", ":")):
        axes.plot(indices, [buckets[index_bucket(t)][f"{measure}_rate"] for t in indices],
                  linestyle=style, marker=".", color=color, label=f"{name} {measure}")


def _plot_blank_runs(axes: Any, name: str, histogram: Mapping[str, int], color: str,
                     offset: float, width: float) -> None:
    lengths = [int(length) for length in histogram]
    axes.bar([length + offset for length in lengths], list(histogram.values()), width=width,
             color=color, label=name)


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


HELP = "play an editing session across open files and time what shows"
DESCRIPTION = ("Open several files, visit places across them (some of them twice), "
               "delete and re-type each line's tail as VS Code or Neovim would drive "
               "`flashls serve`, and report how often and how soon a suggestion shows.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `flashls bench session`."""
    _add_plan_arguments(parser)
    _add_pace_arguments(parser)
    _add_server_arguments(parser)


def _add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SessionConfig()
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="a named setup; heldout: --visit-chars 12 --returns 0 --read-ms "
                             "2000 --interval-ms 150 --places 15 --cut start (flags given win)")
    parser.add_argument("--files", nargs="+", default=[], metavar="PATH",
                        help="files to open (directories give their source files); default: "
                             "a seeded choice of --file-count standard-library .py files of "
                             "150-1500 lines")
    parser.add_argument("--file-count", type=int, default=defaults.file_count,
                        help="how many standard-library files without --files "
                             "(default: %(default)s)")
    parser.add_argument("--places", type=int, default=None,
                        help=f"visits across the files (default: {defaults.places})")
    parser.add_argument("--returns", type=int, default=None,
                        help="how many of the visits go back to an earlier place and type "
                             f"the same text again (default: {defaults.returns})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the plan (default: %(default)s)")
    parser.add_argument("--max-chars", type=int, default=defaults.max_chars,
                        help="delete at most this many characters at a place "
                             "(default: %(default)s)")
    parser.add_argument("--cut", choices=("tail", "start"), default=None,
                        help="tail: delete a line's last --max-chars characters at most; "
                             "start: the whole line after its indentation (default: "
                             f"{defaults.cut})")
    parser.add_argument("--visit-chars", default=None, metavar="short|N",
                        help="characters typed at a place before the rest is pasted back: "
                             "short draws 3-12 for 70%% of places and 13 to --max-chars for "
                             "the others; N types the first N (the whole deleted text if "
                             f"shorter) (default: {defaults.visit_chars})")


def _add_pace_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SessionConfig()
    parser.add_argument("--editor", choices=EDITORS, default=defaults.editor,
                        help="which editor's requests to imitate (default: %(default)s)")
    parser.add_argument("--focus", action=argparse.BooleanOptionalAction,
                        default=defaults.focus,
                        help="send textDocument/didFocus on landing at a place and when the "
                             "cursor has rested 500 ms (default: on)")
    parser.add_argument("--read-ms", type=float, default=None,
                        help="pause between landing at a place and typing "
                             f"(default: {defaults.read_ms:g})")
    parser.add_argument("--interval-ms", type=float, default=None,
                        help=f"time between keystrokes (default: {defaults.interval_ms:g})")
    parser.add_argument("--linger-ms", type=float, default=defaults.linger_ms,
                        help="time at a place after its last keystroke (default: %(default)s)")


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SessionConfig()
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
    parser.add_argument("--llama-server", action="store_true", default=defaults.llama_server,
                        help="start a llama-server with the default model on a free loopback "
                             "port for each variant and run flashls with --engine "
                             "llama-server --endpoint URL against it")
    parser.add_argument("--llama-server-threads", type=int,
                        default=defaults.llama_server_threads,
                        help="CPU threads of that llama-server (default: %(default)s)")
    parser.add_argument("--workspace", default="", metavar="DIR",
                        help="the folder the editor has open (sent as workspaceFolders), "
                             "e.g. the package --files names, for context from other files "
                             "(default: none)")
    parser.add_argument("--out", "--out-dir", dest="out", default=defaults.out_dir,
                        metavar="DIR", help="where the JSON and PNG go (default: %(default)s)")
    parser.add_argument("--request-timeout-s", type=float, default=defaults.request_timeout_s,
                        help="longest wait for one answer (default: %(default)s)")
    parser.add_argument("--startup-timeout-s", type=float, default=defaults.startup_timeout_s,
                        help="longest wait for initialize and the warm-up request, which "
                             "may load the model (default: %(default)s)")


def profiled(arguments: argparse.Namespace) -> dict[str, Any]:
    """The options a profile sets: each as given, else the profile's, else the default."""
    defaults = SessionConfig()
    profile = PROFILES.get(arguments.profile or "", {})
    return {name: (getattr(arguments, name) if getattr(arguments, name) is not None
                   else profile.get(name, getattr(defaults, name)))
            for name in PROFILE_FIELDS}


def _check(arguments: argparse.Namespace, chosen: Mapping[str, Any]) -> None:
    """Refuse nonsense values with a BenchError that says which."""
    if chosen["places"] < 1 or chosen["returns"] < 0 or arguments.file_count < 2:
        raise BenchError("--places must be at least 1, --returns at least 0 and "
                         "--file-count at least 2")
    if arguments.max_chars < 8 or arguments.llama_server_threads < 1:
        raise BenchError("--max-chars must be at least 8, --llama-server-threads at least 1")
    typed_chars_setting(chosen["visit_chars"])
    if min(chosen["interval_ms"], arguments.request_timeout_s) <= 0 \
            or min(chosen["read_ms"], arguments.linger_ms) < 0:
        raise BenchError("--interval-ms and --request-timeout-s must be positive, "
                         "--read-ms and --linger-ms not negative")
    if arguments.workspace and not Path(arguments.workspace).is_dir():
        raise BenchError(f"--workspace {arguments.workspace}: not a directory")


def config_from_arguments(arguments: argparse.Namespace) -> SessionConfig:
    """A SessionConfig from parsed options; nonsense values raise BenchError."""
    chosen = profiled(arguments)
    _check(arguments, chosen)
    return SessionConfig(
        files=tuple(arguments.files), file_count=arguments.file_count, seed=arguments.seed,
        max_chars=arguments.max_chars, profile=arguments.profile or "",
        editor=arguments.editor, focus=arguments.focus, linger_ms=arguments.linger_ms,
        baseline=arguments.baseline, baseline_args=tuple(arguments.baseline_arg),
        baseline_command=tuple(shlex.split(arguments.baseline_command)),
        server_args=tuple(arguments.server_arg), llama_server=arguments.llama_server,
        llama_server_threads=arguments.llama_server_threads, workspace=arguments.workspace,
        out_dir=arguments.out, request_timeout_s=arguments.request_timeout_s,
        startup_timeout_s=arguments.startup_timeout_s, **chosen)


def _describe(config: SessionConfig, payload: dict[str, Any]) -> str:
    returns = sum(visit["kind"] == "return" for visit in payload["visits"])
    typed = sum(visit["typed_chars"] for visit in payload["visits"])
    engine = ", through llama-server" if config.llama_server else ""
    return (f"flashls bench session: {len(payload['visits'])} visits (returns: {returns}) "
            f"over {len(payload['files'])} files, {typed} keystrokes "
            f"(--visit-chars {config.visit_chars}), editor {config.editor}, "
            f"focus {'on' if config.focus else 'off'}{engine}\n{format_table(payload)}")


def handler(arguments: argparse.Namespace) -> int:
    """Run the session, print the table, write the JSON and PNG."""
    return run_command("session", arguments, config_from_arguments, run_session,
                       write_plot, _describe)
