"""`flashls bench users`: N simulated editors typing at once, each through its own
`flashls serve`, against one shared inference server (llama-server with parallel slots, or
`python -m llama_cpp.server`): latency per user, the server's throughput, and whether
every cancelled request stopped there. Replay from `replay.py`, statistics from `report.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import re
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from flashls.bench import report, trace
from flashls.bench.client import LspClient, ServerError
from flashls.bench.harness import (
    BenchError,
    StartedServer,
    run_command,
    run_header,
    start_server,
)
from flashls.bench.latency import BenchConfig, load_traces
from flashls.bench.llama_server import (
    llama_server_binary,
    llama_server_command,
    model_file,
    started_on_free_port,
)
from flashls.bench.replay import (
    STATUS_NOTIFICATION,
    RequestRecord,
    SitePass,
    StatusBoard,
    replay_human,
)

# The servers this bench can start, and the flashls engine that talks to each.
ENGINES = {"llama-server": "llama-server", "llama-cpp-python": "openai"}
READY_PATHS = {"llama-server": "/health", "llama-cpp-python": "/v1/models"}
# Outcomes that close a request: an answer (in time or late), the cancellation
# acknowledged (JSON-RPC RequestCancelled), or an error. Anything else was lost.
ACCOUNTED = ("answered", "late", "cancelled", "error")
COUNTERS = ("prompt_tokens_total", "tokens_predicted_total", "n_decode_total")
SLOT_POLL_S = 0.05
_METRIC_LINE = re.compile(r"^llamacpp:(\w+) (\S+)$", re.MULTILINE)
T = TypeVar("T")


@dataclass(frozen=True)
class UsersConfig:
    """Which shared server, how many users at once, and what each of them types."""

    servers: tuple[str, ...] = ("llama-server",)
    endpoint: str = ""  # a server already running; then `engine` says its kind
    engine: str = "llama-server"
    model: str = ""
    llama_server_binary: str = ""
    parallel: int = 4
    ctx_per_slot: int = 2048
    server_threads: int = 2
    users: tuple[int, ...] = (1, 4, 8)
    files: tuple[str, ...] = ()
    sites: int = 2
    keystrokes_per_site: int = 20
    interval_ms: float = 150.0
    seed: int = 0
    server_args: tuple[str, ...] = ()
    llama_server_args: tuple[str, ...] = ()  # appended to the started llama-server's flags
    out_dir: str = "bench/reports"
    request_timeout_s: float = 30.0
    startup_timeout_s: float = 300.0
    idle_timeout_s: float = 10.0


@dataclass(frozen=True)
class SharedServer:
    """The server every user's flashls talks to: its name in reports, the flashls engine
    for it, its URL, and how it was started (empty when it was already running)."""

    name: str
    engine: str
    endpoint: str
    command: tuple[str, ...] = ()


# The shared server


def parse_user_counts(text: str) -> tuple[int, ...]:
    """`"1,4,8"` -> (1, 4, 8); raises BenchError unless every item is a positive integer."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or not all(item.isdigit() and int(item) > 0 for item in items):
        raise BenchError(f"--users wants positive integers separated by commas, not {text!r}")
    return tuple(int(item) for item in items)


def shared_server_command(config: UsersConfig, name: str, model: str, port: int) -> list[str]:
    """The command starting one kind of shared server on a loopback port."""
    if name == "llama-server":
        return llama_server_command(llama_server_binary(config.llama_server_binary), model,
                                    port, config.parallel, config.ctx_per_slot,
                                    config.server_threads) + list(config.llama_server_args)
    # llama_cpp.server answers one request at a time: one context is all it uses.
    return [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host",
            "127.0.0.1", "--port", str(port), "--n_threads", str(config.server_threads),
            "--n_ctx", str(config.ctx_per_slot)]


@contextlib.asynccontextmanager
async def shared_server(config: UsersConfig, name: str) -> AsyncIterator[SharedServer]:
    """The server `name` for the whole run: the one at `--endpoint`, or one started here
    and stopped at the end, whatever happens."""
    if config.endpoint:
        yield SharedServer(config.engine, config.engine, config.endpoint.rstrip("/"))
        return
    model = model_file(config.model)
    async with started_on_free_port(
            name, lambda port: shared_server_command(config, name, model, port),
            READY_PATHS[name], config.startup_timeout_s) as (command, endpoint):
        yield SharedServer(name, ENGINES[name], endpoint, tuple(command))


# What the server says about itself


def parse_metrics(text: str) -> dict[str, float]:
    """llama-server's Prometheus text as {name without `llamacpp:`: value}."""
    return {name: float(value) for name, value in _METRIC_LINE.findall(text)}


async def read_metrics(http: httpx.AsyncClient) -> dict[str, float] | None:
    """The server's counters, or None where it has no `/metrics` (llama_cpp.server, or a
    llama-server started without `--metrics`)."""
    try:
        response = await http.get("/metrics")
    except httpx.HTTPError:
        return None
    metrics = parse_metrics(response.text) if response.status_code == 200 else {}
    return metrics or None


def counter_growth(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """How much each counter of `COUNTERS` grew; those this build lacks are left out."""
    return {name: after[name] - before[name] for name in COUNTERS
            if name in before and name in after}


def server_throughput(before: Mapping[str, float], at_end: Mapping[str, float],
                      after: Mapping[str, float], window_s: float) -> dict[str, Any]:
    """Counters read before the typing, when it ended, and once the slots were idle: their
    growth over the window (per second for the token counters), the part of it after the
    typing ended, and the gauges as they stood at the end."""
    grown = counter_growth(before, after)
    rates = {f"{name.removesuffix('_total')}_per_s": value / window_s if window_s > 0 else None
             for name, value in grown.items() if name != "n_decode_total"}
    gauges = {name: after[name] for name in ("requests_processing", "requests_deferred",
                                             "n_busy_slots_per_decode") if name in after}
    return {"window_s": window_s, "grown": grown, **rates,
            "grown_after_typing": counter_growth(at_end, after), "gauges_after": gauges}


async def slots_busy(http: httpx.AsyncClient) -> int | None:
    """How many slots are processing, or None where the server has no `/slots`."""
    try:
        response = await http.get("/slots")
        slots = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(slots, list):
        return None
    return sum(bool(slot.get("is_processing")) for slot in slots if isinstance(slot, dict))


async def wait_for_idle(http: httpx.AsyncClient, timeout_s: float) -> dict[str, Any]:
    """Slots busy when the typing ended, whether all of them stopped within `timeout_s`
    (None: the server cannot tell), and how long that took in ms. A cancelled request whose
    generation went on would keep its slot busy here."""
    started = time.perf_counter()
    busy_at_end = busy = await slots_busy(http)
    while busy and (time.perf_counter() - started) < timeout_s:
        await asyncio.sleep(SLOT_POLL_S)
        busy = await slots_busy(http)
    return {"server_idle_after": None if busy is None else busy == 0,
            "idle_wait_ms": (time.perf_counter() - started) * 1000,
            "busy_slots_at_end": busy_at_end}


# The users


def flashls_command(config: UsersConfig, server: SharedServer) -> list[str]:
    """One user's `flashls serve`, its engine pointed at the shared server."""
    return [sys.executable, "-m", "flashls", "serve", "--engine", server.engine,
            "--endpoint", server.endpoint, *config.server_args]


def user_traces(config: UsersConfig, seed: int) -> list[trace.Trace]:
    """One user's own sites: the same files as everyone's, picked with the user's seed."""
    return load_traces(BenchConfig(files=config.files, sites=config.sites, seed=seed,
                                   keystrokes_per_site=config.keystrokes_per_site))


def user_seeds(config: UsersConfig, round_index: int) -> list[int]:
    """A seed for each user of a round. Users of earlier rounds took the seeds before:
    nobody re-types a line whose prompt a slot may still hold."""
    first = config.seed + sum(config.users[:round_index])
    return list(range(first, first + config.users[round_index]))


async def start_users(command: Sequence[str], count: int,
                      timeout_s: float) -> list[LspClient]:
    """`count` users' servers started at once; if one fails, the others are stopped."""
    outcomes = await asyncio.gather(*(start_server(command, "flashls", timeout_s)
                                      for _ in range(count)), return_exceptions=True)
    clients = [outcome.client for outcome in outcomes if isinstance(outcome, StartedServer)]
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        await asyncio.gather(*(client.kill() for client in clients))
        raise failures[0]
    return clients


async def all_or_none(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run the coroutines at once; the first failure cancels the others and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


async def type_as_user(client: LspClient, user: int, traces: Sequence[trace.Trace],
                       config: UsersConfig) -> list[RequestRecord]:
    """One user's sites in turn, typed at a human pace; each keystroke cancels the request
    the previous one left running, as an editor does."""
    board = StatusBoard()
    client.subscribe(STATUS_NOTIFICATION, board.receive)
    records: list[RequestRecord] = []
    for index, one in enumerate(traces):
        records += await replay_human(client, board, SitePass(f"user{user}", index, one),
                                      config.interval_ms / 1000, config.request_timeout_s)
    return records


async def run_round(config: UsersConfig, server: SharedServer,
                    round_index: int) -> dict[str, Any]:
    """The round's users typing at once against the server; their summary and records."""
    traces = [user_traces(config, seed) for seed in user_seeds(config, round_index)]
    count = len(traces)
    command = flashls_command(config, server)
    clients: list[LspClient] = []
    try:
        clients = await start_users(command, count, config.startup_timeout_s)
        async with httpx.AsyncClient(base_url=server.endpoint, timeout=10) as http:
            observed = await _typing_observed(config, http, clients, traces)
        await asyncio.gather(*(client.close() for client in clients))
    except ServerError as error:
        raise BenchError(f"a user's flashls stopped: {error}") from error
    finally:
        await asyncio.gather(*(client.kill() for client in clients))
    keystrokes = sum(len(one.keystrokes) for user in traces for one in user)
    return round_summary(server.name, count, keystrokes=keystrokes, **observed)


async def _typing_observed(config: UsersConfig, http: httpx.AsyncClient,
                           clients: Sequence[LspClient],
                           traces: Sequence[Sequence[trace.Trace]]) -> dict[str, Any]:
    """Everyone's typing, with the server's counters read before it, when it ended, and
    once the slots were idle again."""
    await wait_for_idle(http, config.idle_timeout_s)  # the users' warm-ups settle first
    before = await read_metrics(http)
    started = time.perf_counter()
    records = await all_or_none([type_as_user(client, user, traces[user], config)
                                 for user, client in enumerate(clients)])
    typing_s = time.perf_counter() - started
    at_end = await read_metrics(http)
    idle = await wait_for_idle(http, config.idle_timeout_s)
    after = await read_metrics(http)
    counters = (server_throughput(before, at_end, after, time.perf_counter() - started)
                if before is not None and at_end is not None and after is not None else None)
    return {"records_by_user": records, "typing_s": typing_s, "counters": counters,
            "idle": idle}


# Summaries


def lost(records: Sequence[RequestRecord]) -> int:
    """Requests closed by neither an answer, nor an acknowledged cancellation, nor an error."""
    return sum(record.outcome not in ACCOUNTED for record in records)


def received_tokens(records: Sequence[RequestRecord]) -> int | None:
    """Tokens generated for the answers the editors got, from flashls's statuses; None
    when no answer carried a count."""
    counts = [record.generated_tokens for record in records
              if record.outcome in ("answered", "late") and record.generated_tokens is not None]
    return sum(counts) if counts else None


def user_summary(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """What one user saw: outcomes, latency from the keystroke, suggestions shown."""
    summary = report.summarize(records)
    latency = summary["latency_ms"]
    return {name: summary[name] for name in ("requests", *ACCOUNTED, "timeout",
                                             "hit_rate", "fresh_shown", "fresh_shown_rate")
            } | {"lost": lost(records), "p50_ms": latency["p50"], "p90_ms": latency["p90"]}


def token_waste(counters: Mapping[str, Any] | None,
                records: Sequence[RequestRecord]) -> dict[str, Any] | None:
    """Tokens the server predicted beside those in the answers the editors received."""
    predicted = (counters or {}).get("grown", {}).get("tokens_predicted_total")
    received = received_tokens(records)
    if predicted is None:
        return None
    return {"server_predicted": predicted, "clients_received": received,
            "not_received": predicted - received if received is not None else None}


def round_summary(server: str, count: int, keystrokes: int,
                  records_by_user: Sequence[Sequence[RequestRecord]], typing_s: float,
                  counters: dict[str, Any] | None, idle: Mapping[str, Any]) -> dict[str, Any]:
    """One round: every user's figures, the pooled ones, and the server's side.
    `keystrokes` is how many were typed in all: one request each."""
    pooled = [record for records in records_by_user for record in records]
    summary = report.summarize(pooled)
    return {
        "server": server, "users": count, "keystrokes": keystrokes, "typing_s": typing_s,
        "pooled": summary | {"lost": lost(pooled)},
        "per_user": [user_summary(records) | {"user": user}
                     for user, records in enumerate(records_by_user)],
        "server_counters": counters, "tokens": token_waste(counters, pooled),
        "server_side": ("llama-server's /metrics and /slots" if counters is not None else
                        "no /metrics on this server: client-side figures only"),
        **idle,
        "records": [dataclasses.asdict(record) for record in pooled],
    }


async def run_benchmark(config: UsersConfig) -> dict[str, Any]:
    """Every server kind, and against it every number of users in turn."""
    started = time.perf_counter()
    rounds: list[dict[str, Any]] = []
    servers: list[dict[str, Any]] = []
    for name in config.servers:
        async with shared_server(config, name) as server:
            servers.append(dataclasses.asdict(server))
            for round_index in range(len(config.users)):
                rounds.append(await run_round(config, server, round_index))
                _progress(rounds[-1])
    return {
        **run_header("users", config), "servers": servers,
        "run_s": time.perf_counter() - started, "rounds": rounds,
    }


def _progress(summary: Mapping[str, Any]) -> None:
    pooled = summary["pooled"]
    print(f"{summary['server']}, {summary['users']} users: {pooled['requests']} requests, "
          f"{pooled['answered']} answered, {pooled['lost']} lost, "
          f"p50 {report.fixed(pooled['latency_ms']['p50'], 0)} ms", file=sys.stderr, flush=True)


# Faces: table, JSON, PNG


def _rate(counters: Mapping[str, Any] | None, name: str) -> str:
    value = (counters or {}).get(name)
    return "-" if value is None else f"{value:.1f}"


def _idle(summary: Mapping[str, Any]) -> str:
    idle = summary["server_idle_after"]
    return "-" if idle is None else f"{'yes' if idle else 'NO'} {summary['idle_wait_ms']:.0f}ms"


def format_table(payload: Mapping[str, Any]) -> str:
    """One line per round (pooled), then one per user."""
    rows = [("server", "users", "requests", "answered", "late", "cancelled", "error", "lost",
             "p50 ms", "p90 ms", "fresh", "prompt tok/s", "predicted tok/s", "idle after")]
    for summary in payload["rounds"]:
        pooled, counters = summary["pooled"], summary["server_counters"]
        rows.append((summary["server"], str(summary["users"]), *(
            str(pooled[name]) for name in ("requests", "answered", "late", "cancelled",
                                           "error", "lost")),
            report.fixed(pooled["latency_ms"]["p50"], 0),
            report.fixed(pooled["latency_ms"]["p90"], 0),
            str(pooled["fresh_shown"]), _rate(counters, "prompt_tokens_per_s"),
            _rate(counters, "tokens_predicted_per_s"), _idle(summary)))
    users = [("server", "users", "user", "requests", "answered", "cancelled", "lost",
              "p50 ms", "p90 ms")]
    for summary in payload["rounds"]:
        for one in summary["per_user"]:
            users.append((summary["server"], str(summary["users"]), str(one["user"]),
                          str(one["requests"]), str(one["answered"]), str(one["cancelled"]),
                          str(one["lost"]), report.fixed(one["p50_ms"], 0),
                          report.fixed(one["p90_ms"], 0)))
    return "\n".join([*report.aligned(rows), "", *report.aligned(users), *_waste_lines(payload)])


def _waste_lines(payload: Mapping[str, Any]) -> list[str]:
    lines = []
    for summary in payload["rounds"]:
        tokens, counters = summary["tokens"], summary["server_counters"]
        if tokens is None or counters is None:
            continue
        after = counters["grown_after_typing"].get("tokens_predicted_total", 0)
        lines.append(f"{summary['server']}, {summary['users']} users: the server predicted "
                     f"{tokens['server_predicted']:.0f} tokens ({after:.0f} after the typing "
                     f"ended); the answers held {tokens['clients_received'] or 0}")
    return ["", *lines] if lines else []


def write_plot(path: Path, payload: Mapping[str, Any]) -> None:
    """Pooled p50 and p90 against the number of users (each user's p50 as dots), and the
    server's predicted tokens per second, one line per server kind."""
    from matplotlib.figure import Figure  # imported late: matplotlib takes a while to load

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    latency_axes, throughput_axes = figure.subplots(1, 2)
    names = list(dict.fromkeys(summary["server"] for summary in payload["rounds"]))
    for index, name in enumerate(names):
        rounds = [summary for summary in payload["rounds"] if summary["server"] == name]
        _plot_latency(latency_axes, name, rounds, f"C{index}")
        rates = [(summary["users"], (summary["server_counters"] or {}).get(
            "tokens_predicted_per_s")) for summary in rounds]
        if any(rate is not None for _, rate in rates):
            throughput_axes.plot([users for users, _ in rates],
                                 [rate or 0.0 for _, rate in rates], marker="o",
                                 color=f"C{index}", label=name)
    latency_axes.set(xlabel="users typing at once", ylabel="ms from the keystroke",
                     title="Latency of answers shown (solid p50, dashed p90)")
    throughput_axes.set(xlabel="users typing at once", ylabel="tokens/s",
                        title="Server's predicted tokens/s (/metrics)")
    counts = sorted({summary["users"] for summary in payload["rounds"]})
    for axes in (latency_axes, throughput_axes):
        axes.set_xticks(counts)
        axes.set_ylim(0, axes.get_ylim()[1] * 1.1)  # room above lines that barely differ
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _plot_latency(axes: Any, name: str, rounds: Sequence[Mapping[str, Any]],
                  color: str) -> None:
    counts = [summary["users"] for summary in rounds]
    for stat, style in (("p50", "-"), ("p90", "--")):
        values = [summary["pooled"]["latency_ms"][stat] for summary in rounds]
        axes.plot(counts, [math.nan if value is None else value for value in values],
                  linestyle=style, marker="o", color=color,
                  label=f"{name} {stat}" if stat == "p50" else None)
    dots = [(summary["users"], one["p50_ms"]) for summary in rounds
            for one in summary["per_user"] if one["p50_ms"] is not None]
    axes.scatter([users for users, _ in dots], [p50 for _, p50 in dots], color=color,
                 alpha=0.35, s=12)


# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `flashls bench users`."""
    defaults = UsersConfig()
    parser.add_argument("--server", default=",".join(defaults.servers), metavar="LIST",
                        help="shared servers to start in turn, comma-separated: "
                             f"{', '.join(ENGINES)} (default: %(default)s)")
    parser.add_argument("--endpoint", default=defaults.endpoint, metavar="URL",
                        help="use the server already running at URL instead of starting one")
    parser.add_argument("--engine", choices=("llama-server", "openai"),
                        default=defaults.engine,
                        help="with --endpoint: the flashls engine that talks to it "
                             "(default: %(default)s)")
    parser.add_argument("--model", default=defaults.model,
                        help="GGUF path or model name the started server loads "
                             "(default: the default model)")
    parser.add_argument("--llama-server-binary", default=defaults.llama_server_binary,
                        metavar="PATH", help="llama-server to start (default: the one "
                        "scripts/build_llama_server.sh built, else llama-server on PATH)")
    parser.add_argument("--parallel", type=int, default=defaults.parallel, metavar="NP",
                        help="llama-server's slots, -np (default: %(default)s)")
    parser.add_argument("--ctx", type=int, default=defaults.ctx_per_slot, metavar="TOKENS",
                        help="context per slot; llama-server gets -c NP x TOKENS "
                             "(default: %(default)s)")
    parser.add_argument("--server-threads", type=int, default=defaults.server_threads,
                        help="CPU threads of the started server (default: %(default)s)")
    parser.add_argument("--users", default=",".join(map(str, defaults.users)),
                        metavar="LIST", help="numbers of users typing at once, one round "
                        "each, comma-separated (default: %(default)s)")
    parser.add_argument("--files", nargs="+", default=[], metavar="PATH",
                        help="files or directories to take lines from (default: the .py "
                             "files of Python's standard library, tests left out)")
    parser.add_argument("--sites", type=int, default=defaults.sites,
                        help="lines each user re-types (default: %(default)s)")
    parser.add_argument("--keystrokes-per-site", type=int,
                        default=defaults.keystrokes_per_site, metavar="K",
                        help="type at most the first K characters of each line "
                             "(default: %(default)s)")
    parser.add_argument("--interval-ms", type=float, default=defaults.interval_ms,
                        help="time between keystrokes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="the first user picks its lines with this seed, every other "
                             "user of every round with the next one (default: %(default)s)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for each user's `flashls serve`, repeatable")
    parser.add_argument("--llama-server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for the started llama-server, repeatable, e.g. "
                             "--llama-server-arg=-ub --llama-server-arg=64")
    parser.add_argument("--out", default=defaults.out_dir, metavar="DIR",
                        help="where the JSON and PNG go (default: %(default)s)")
    parser.add_argument("--request-timeout-s", type=float, default=defaults.request_timeout_s,
                        help="longest wait for a site's answers (default: %(default)s)")
    parser.add_argument("--startup-timeout-s", type=float, default=defaults.startup_timeout_s,
                        help="longest wait for a server to start and warm up "
                             "(default: %(default)s)")
    parser.add_argument("--idle-timeout-s", type=float, default=defaults.idle_timeout_s,
                        help="after the typing, longest wait for llama-server's slots to "
                             "stop (default: %(default)s)")


def config_from_arguments(arguments: argparse.Namespace) -> UsersConfig:
    """A UsersConfig from parsed options; nonsense values raise BenchError."""
    servers = tuple(name.strip() for name in arguments.server.split(",") if name.strip())
    unknown = [name for name in servers if name not in ENGINES]
    if unknown or not servers:
        raise BenchError(f"--server takes {', '.join(ENGINES)}, not {arguments.server!r}")
    if min(arguments.sites, arguments.keystrokes_per_site, arguments.parallel,
           arguments.ctx, arguments.server_threads) < 1:
        raise BenchError("--sites, --keystrokes-per-site, --parallel, --ctx and "
                         "--server-threads must be at least 1")
    if min(arguments.interval_ms, arguments.request_timeout_s, arguments.idle_timeout_s) <= 0:
        raise BenchError("--interval-ms, --request-timeout-s and --idle-timeout-s must be "
                         "positive")
    return UsersConfig(
        servers=(arguments.engine,) if arguments.endpoint else servers,
        endpoint=arguments.endpoint, engine=arguments.engine, model=arguments.model,
        llama_server_binary=arguments.llama_server_binary, parallel=arguments.parallel,
        ctx_per_slot=arguments.ctx, server_threads=arguments.server_threads,
        users=parse_user_counts(arguments.users), files=tuple(arguments.files),
        sites=arguments.sites, keystrokes_per_site=arguments.keystrokes_per_site,
        interval_ms=arguments.interval_ms, seed=arguments.seed,
        server_args=tuple(arguments.server_arg),
        llama_server_args=tuple(arguments.llama_server_arg), out_dir=arguments.out,
        request_timeout_s=arguments.request_timeout_s,
        startup_timeout_s=arguments.startup_timeout_s,
        idle_timeout_s=arguments.idle_timeout_s)


def _describe(config: UsersConfig, payload: dict[str, Any]) -> str:
    return (f"flashls bench users: {config.sites} sites x {config.keystrokes_per_site} "
            f"keystrokes per user, a keystroke every {config.interval_ms:g} ms, "
            f"{payload['run_s']:.0f} s\n{format_table(payload)}")


def handler(arguments: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write the JSON and PNG."""
    return run_command("users", arguments, config_from_arguments, run_benchmark,
                       write_plot, _describe)


HELP = "many editors typing at once against one shared inference server"
DESCRIPTION = ("Start one llama-server (-np 4) or llama_cpp.server, then for each "
               "number of users start that many `flashls serve` pointed at it and "
               "let them all re-type lines at a human pace at once; report each "
               "user's latency, the server's throughput, lost requests, and whether "
               "the server's slots stop once the typing ends.")
