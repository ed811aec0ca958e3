"""`flashls bench latency`: start servers, replay the typing traces, report and compare.

The traces come from `trace.py`, the protocol from `client.py`, the replay from `replay.py`,
the numbers from `report.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashls import settings
from flashls.bench import llama_vscode, report, trace
from flashls.bench.client import LspClient
from flashls.bench.harness import BenchError, run_command, run_header, serving
from flashls.bench.replay import (
    STATUS_NOTIFICATION,
    RequestRecord,
    SitePass,
    StatusBoard,
    replay_human,
    replay_sync,
)

CANDIDATE = "flashls"
NAIVE = "naive"
SAME = "same"  # the baseline: flashls again, with --baseline-arg flags added
LLAMA_VSCODE = llama_vscode.VARIANT
NAIVE_SETTINGS = ("reuse_kv_prefix", "speculative_cache", "progressive")
# The naive baseline is a plain FIM call per keystroke: it answers only when done.
NAIVE_TIME_BUDGET = ["--time-budget-ms", "600000"]


@dataclass(frozen=True)
class BenchConfig:
    """What to type, against which servers, and how."""

    files: tuple[str, ...] = ()
    sites: int = 20
    seed: int = 0
    keystrokes_per_site: int = 40
    repeat: int = 1
    mode: str = "sync"
    interval_ms: float = 80.0
    prime: bool = False
    baseline: str = NAIVE
    llama_server: str = ""  # the llama-server URL the llama-vscode baseline talks to
    server_command: tuple[str, ...] = ()
    server_args: tuple[str, ...] = ()
    baseline_args: tuple[str, ...] = ()  # the `same` baseline's extra flags
    # Starts the `same` baseline instead of the candidate's command (e.g. an older checkout).
    baseline_command: tuple[str, ...] = ()
    workspace: str = ""  # a folder the editor has open (workspaceFolders), or none
    out_dir: str = "bench/results"
    request_timeout_s: float = 30.0
    startup_timeout_s: float = 300.0


@dataclass
class VariantResult:
    """One server's run: how it started and every request it answered."""

    name: str
    command: list[str]
    startup_ms: float
    warmup_ms: float
    records: list[RequestRecord]
    rss_samples_mb: list[float | None]  # after warm-up, after each site pass, at the end


def naive_flags() -> list[str]:
    """`--no-...` flags switching off the optimisations the benchmark measures."""
    fields = {spec.name: spec for spec in settings.setting_fields()}
    flags = []
    for name in NAIVE_SETTINGS:
        if fields[name].default is not True:
            raise BenchError(f"setting {name} is no longer an on-by-default boolean")
        flags.append("--no-" + name.replace("_", "-"))
    return flags


def server_command(config: BenchConfig, variant: str) -> list[str]:
    """The command starting one variant's server."""
    base = list(config.server_command) or [sys.executable, "-m", "flashls", "serve"]
    if variant == SAME and config.baseline_command:
        base = list(config.baseline_command)
    extra = ([*naive_flags(), *NAIVE_TIME_BUDGET] if variant == NAIVE
             else list(config.baseline_args) if variant == SAME else [])
    return [*base, *config.server_args, *extra]


async def _replay_all(client: LspClient, traces: Sequence[trace.Trace], variant: str,
                      config: BenchConfig, rss_samples_mb: list[float | None],
                      ) -> list[RequestRecord]:
    """Every trace, `config.repeat` times, sampling the server's RSS after each site."""
    board = StatusBoard()
    client.subscribe(STATUS_NOTIFICATION, board.receive)
    records: list[RequestRecord] = []
    for repetition in range(config.repeat):
        for index, one in enumerate(traces):
            site_pass = SitePass(variant, index, one, repetition)
            if config.mode == "human":
                records += await replay_human(client, board, site_pass,
                                              config.interval_ms / 1000,
                                              config.request_timeout_s, config.prime)
            else:
                records += await replay_sync(client, board, site_pass,
                                             config.request_timeout_s, config.prime)
            rss_samples_mb.append(client.rss_mb())
    return records


async def run_variant(name: str, traces: Sequence[trace.Trace],
                      config: BenchConfig) -> VariantResult:
    """Start one server, warm it up, replay every trace, shut it down."""
    command = server_command(config, name)
    async with serving(command, f"{name} server", config.startup_timeout_s,
                       config.workspace) as server:
        rss_samples_mb = [server.client.rss_mb()]
        records = await _replay_all(server.client, traces, name, config, rss_samples_mb)
        rss_samples_mb.append(server.client.rss_mb())
    return VariantResult(name, command, server.startup_ms, server.warmup_ms, records,
                         rss_samples_mb)


def load_traces(config: BenchConfig) -> list[trace.Trace]:
    """The sites picked for this config, as typing traces."""
    try:
        files = trace.collect_files(config.files) if config.files else trace.default_corpus()
    except FileNotFoundError as error:
        raise BenchError(str(error)) from error
    sites = trace.pick_sites(files, config.sites, config.seed)
    if not sites:
        raise BenchError("no line to re-type in the given files (need code lines with at "
                         f"least {trace.MIN_SITE_CHARS} characters)")
    return trace.build_traces(sites, config.keystrokes_per_site)


async def run_llama_vscode(traces: Sequence[trace.Trace], config: BenchConfig) -> VariantResult:
    """The traces sent straight to llama-server as llama.vscode sends them."""
    try:
        run = await llama_vscode.run_baseline(
            config.llama_server, traces, config.mode, config.interval_ms / 1000,
            config.repeat, config.request_timeout_s, config.startup_timeout_s, config.prime)
    except llama_vscode.LlamaServerError as error:
        raise BenchError(f"{LLAMA_VSCODE} baseline: {error}") from error
    return VariantResult(LLAMA_VSCODE, [f"POST {config.llama_server.rstrip('/')}/infill"],
                         run.startup_ms, run.warmup_ms, run.records, [None])


async def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    """Every variant over the same traces; the payload that the JSON file holds."""
    traces = load_traces(config)
    results = [await run_variant(CANDIDATE, traces, config)]
    if config.baseline in (NAIVE, SAME):
        results.append(await run_variant(config.baseline, traces, config))
    elif config.baseline == LLAMA_VSCODE:
        results.append(await run_llama_vscode(traces, config))
    return build_payload(config, traces, results)


def build_payload(config: BenchConfig, traces: Sequence[trace.Trace],
                  results: Sequence[VariantResult]) -> dict[str, Any]:
    """Config, sites, summaries, comparison and records, ready for JSON."""
    variants: dict[str, dict[str, Any]] = {
        result.name: {"server_command": result.command, "startup_ms": result.startup_ms,
                      "warmup_ms": result.warmup_ms,
                      "rss_mb": report.rss_summary(result.rss_samples_mb),
                      "summary": report.summarize(result.records)}
        for result in results}
    baselines = [name for name in variants if name != CANDIDATE]
    comparison = (report.compare(variants[CANDIDATE]["summary"],
                                 variants[baselines[0]]["summary"])
                  if CANDIDATE in variants and baselines else None)
    return {
        **run_header("latency", config),
        "sites": [{"path": t.site.path, "line": t.site.line, "text": t.site.body,
                   "keystrokes": len(t.keystrokes)} for t in traces],
        "variants": variants, "comparison": comparison,
        "records": [dataclasses.asdict(r) for result in results for r in result.records],
    }


def write_plot(path: Path, payload: Mapping[str, Any]) -> None:
    """The latencies' ECDF and median per keystroke of each variant (see `report`)."""
    latencies: dict[str, list[float]] = {name: [] for name in payload["variants"]}
    grouped: dict[str, list[RequestRecord]] = {name: [] for name in payload["variants"]}
    for raw in payload["records"]:
        record = RequestRecord(**raw)
        grouped[record.variant].append(record)
        if record.latency_ms is not None:
            latencies[record.variant].append(record.latency_ms)
    report.write_plot(path, latencies,
                      {name: report.median_by_keystroke(rs) for name, rs in grouped.items()})


HELP = "replay typing against `flashls serve` and time each suggestion"
DESCRIPTION = ("Re-type lines of real files one character at a time, ask for an inline "
               "completion after each keystroke, and compare flashls with a naive "
               "baseline (no KV-prefix reuse, no speculative cache).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `flashls bench latency`."""
    defaults = BenchConfig()
    parser.add_argument("--files", nargs="+", default=[], metavar="PATH",
                        help="files or directories to take lines from (default: the .py "
                             "files of Python's standard library, tests left out)")
    parser.add_argument("--sites", type=int, default=defaults.sites,
                        help="lines to re-type (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed for picking lines (default: %(default)s)")
    parser.add_argument("--keystrokes-per-site", type=int,
                        default=defaults.keystrokes_per_site, metavar="K",
                        help="type at most the first K characters of each line "
                             "(default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=defaults.repeat, metavar="N",
                        help="replay all the sites N times on the same server, e.g. to "
                             "watch its memory over many keystrokes (default: %(default)s)")
    parser.add_argument("--mode", choices=("sync", "human"), default=defaults.mode,
                        help="sync: wait for each answer before the next keystroke; human: "
                             "type every --interval-ms and cancel stale requests")
    parser.add_argument("--interval-ms", type=float, default=defaults.interval_ms,
                        help="time between keystrokes in human mode (default: %(default)s)")
    parser.add_argument("--prime", action=argparse.BooleanOptionalAction,
                        default=defaults.prime,
                        help="before each site's first keystroke, wait for one untimed "
                             "completion at its cursor, so typing meets a warm model "
                             "(default: off: the first keystroke pays the cold prompt)")
    parser.add_argument("--baseline", choices=(NAIVE, SAME, LLAMA_VSCODE, "none"),
                        default=defaults.baseline,
                        help="naive: replay again against a server started with "
                             f"{' '.join(naive_flags())}; {SAME}: against flashls with the "
                             f"--baseline-arg flags added; {LLAMA_VSCODE}: send llama.vscode's "
                             "/infill requests straight to --llama-server; none: skip "
                             "(default: %(default)s)")
    parser.add_argument("--baseline-arg", action="append", default=[], metavar="ARG",
                        help=f"extra argument for the {SAME} baseline's `flashls serve`, "
                             "repeatable (e.g. --baseline-arg=--context-sources=none)")
    parser.add_argument("--baseline-command", default="", metavar="CMD",
                        help=f"start the {SAME} baseline with this command instead of the "
                             "candidate's (split like a shell would), e.g. an older "
                             "checkout's: 'env PYTHONPATH=/tmp/old python -P -m flashls serve'")
    parser.add_argument("--workspace", default="", metavar="DIR",
                        help="the folder the editor has open (sent as workspaceFolders), "
                             "e.g. the package the --files come from, for context from "
                             "other files (default: none)")
    parser.add_argument("--llama-server", default=defaults.llama_server, metavar="URL",
                        help=f"the llama-server the {LLAMA_VSCODE} baseline talks to, e.g. "
                             "http://127.0.0.1:8012")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `flashls serve`, repeatable "
                             "(e.g. --server-arg=--engine --server-arg=fake)")
    parser.add_argument("--server-command", default=None, metavar="CMD",
                        help="start this command instead of `python -m flashls serve` "
                             "(split like a shell would)")
    parser.add_argument("--out", default=defaults.out_dir, metavar="DIR",
                        help="where the JSON and PNG go (default: %(default)s)")
    parser.add_argument("--request-timeout-s", type=float, default=defaults.request_timeout_s,
                        help="longest wait for one completion (default: %(default)s)")
    parser.add_argument("--startup-timeout-s", type=float, default=defaults.startup_timeout_s,
                        help="longest wait for initialize and the warm-up request, which "
                             "may load the model (default: %(default)s)")


def config_from_arguments(arguments: argparse.Namespace) -> BenchConfig:
    """A BenchConfig from parsed options; nonsense values raise BenchError."""
    if min(arguments.sites, arguments.keystrokes_per_site, arguments.repeat) < 1:
        raise BenchError("--sites, --keystrokes-per-site and --repeat must be at least 1")
    if arguments.interval_ms <= 0 or arguments.request_timeout_s <= 0:
        raise BenchError("--interval-ms and --request-timeout-s must be positive")
    if arguments.baseline == LLAMA_VSCODE and not arguments.llama_server:
        raise BenchError(f"--baseline {LLAMA_VSCODE} needs --llama-server URL")
    if arguments.baseline == SAME and not (arguments.baseline_arg
                                           or arguments.baseline_command):
        raise BenchError(f"--baseline {SAME} needs --baseline-arg or --baseline-command")
    if arguments.workspace and not Path(arguments.workspace).is_dir():
        raise BenchError(f"--workspace {arguments.workspace}: not a directory")
    command = shlex.split(arguments.server_command) if arguments.server_command else []
    return BenchConfig(
        files=tuple(arguments.files), sites=arguments.sites, seed=arguments.seed,
        keystrokes_per_site=arguments.keystrokes_per_site, repeat=arguments.repeat,
        mode=arguments.mode,
        interval_ms=arguments.interval_ms, prime=arguments.prime, baseline=arguments.baseline,
        llama_server=arguments.llama_server,
        server_command=tuple(command), server_args=tuple(arguments.server_arg),
        baseline_args=tuple(arguments.baseline_arg),
        baseline_command=tuple(shlex.split(arguments.baseline_command)),
        workspace=arguments.workspace, out_dir=arguments.out,
        request_timeout_s=arguments.request_timeout_s,
        startup_timeout_s=arguments.startup_timeout_s)


def _describe(config: BenchConfig, payload: dict[str, Any]) -> str:
    repeated = f" x{config.repeat}" if config.repeat > 1 else ""
    return (f"flashls bench latency: {len(payload['sites'])} sites{repeated}, mode "
            f"{config.mode}\n{report.format_table(payload)}")


def handler(arguments: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write the JSON and PNG."""
    return run_command("latency", arguments, config_from_arguments, run_benchmark,
                       write_plot, _describe)
