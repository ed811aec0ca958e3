"""`flashls bench wait`: what a user sees who stops at a cold place and waits without typing,
on HumanEval single-line infilling, against a running `flashls serve`, beside a plain FIM
call on the same model. Rows and pass@1 come from `infill.py`, the client from `client.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashls import settings
from flashls.bench import report
from flashls.bench.client import LspClient, Response
from flashls.bench.harness import BenchError, run_command, run_header, serving
from flashls.bench.infill import DEFAULT_DATA_DIR, InfillError, passes_tests, read_rows
from flashls.bench.replay import (
    INLINE_COMPLETION,
    STATUS_NOTIFICATION,
    TRIGGER_AUTOMATIC,
    StatusBoard,
    server_fields,
    shown_text,
)
from flashls.bench.trace import Position, utf16_length
from flashls.engine.base import CancelToken, Engine, EngineError, GenerationRequest

# flashls.server's FINISHED_NOTIFICATION; not imported, to keep pygls out of the bench.
FINISHED_NOTIFICATION = "flashls/suggestionFinished"
DATA = "multiline"  # single-line rows are the one-line middles of this set
# The status messages of an answer with only part of its suggestion: the time budget cut
# it, or it showed the words generated so far (partial answers).
INCOMPLETE = ("deadline", "partial")
# What each row is scored on: the first answer as on screen at `screen_ms` (nothing if it
# came later), the first answer whenever it came, what the user who waits ends up seeing,
# and the plain FIM call.
VIEWS = ("screen", "first", "waited", "fim")
VIEW_LABELS = {"screen": "on screen at {screen_ms:g} ms", "first": "first answer",
               "waited": "after waiting", "fim": "plain FIM"}
PLOT_LABELS = {"screen": "on screen\nat {screen_ms:g} ms", "first": "first\nanswer",
               "waited": "after\nwaiting", "fim": "plain\nFIM"}
LATENCIES = ("first", "final", "finished", "fim")
LATENCY_LABELS = {"first": "first answer", "final": "final answer",
                  "finished": "suggestionFinished", "fim": "plain FIM (in-process)"}


@dataclass(frozen=True)
class WaitConfig:
    """Which rows, which server, how long the user waits."""

    data_dir: str = DEFAULT_DATA_DIR
    limit: int = 40
    seed: int = 0
    server_args: tuple[str, ...] = ()
    wait_s: float = 60.0
    screen_ms: float = 1500.0
    baseline: bool = True
    fim_max_tokens: int = 128
    out_dir: str = "bench/reports"
    request_timeout_s: float = 30.0
    startup_timeout_s: float = 300.0


@dataclass(frozen=True)
class Hole:
    """One single-line row as an editor holds it: the row's prefix, then the hole's line
    holding only its indentation with the cursor after it, then the row's suffix."""

    task_id: str
    row: dict[str, Any] = field(repr=False, compare=False)
    indent: str
    canonical: str  # the middle's line, indentation included, without its newline

    @property
    def text(self) -> str:
        """The document as opened."""
        return f"{self.row['prompt']}{self.indent}\n{self.row['suffix']}"

    @property
    def cursor(self) -> Position:
        """After the indentation on the hole's line."""
        return Position(self.row["prompt"].count("\n"), utf16_length(self.indent))


@dataclass
class Answer:
    """One inline completion as the editor got it, with the server's status for it."""

    outcome: str  # answered | error | timeout
    text: str = ""  # the first item's text after the cursor; "" for none
    response_ms: float | None = None  # request written -> response read
    source: str | None = None
    finish: str | None = None
    timings: dict[str, float] | None = None
    evaluated_tokens: int | None = None
    generated_tokens: int | None = None
    jsonrpc_ms: float | None = None


@dataclass
class FimAnswer:
    """The plain FIM call's line for one row."""

    text: str
    finish: str
    ms: float
    prompt_tokens: int
    generated_tokens: int


@dataclass
class Verdict:
    """One view of a row, scored: the line it puts in the hole, and how it fares."""

    line: str | None  # what fills the hole, indentation included; None when nothing
    exact: bool = False
    passed: bool = False


@dataclass
class Place:
    """One row's visit: the first answer, the wait for the rest, the answer asked again."""

    task_id: str
    uri: str
    line: int  # 0-based line of the hole in the document
    canonical: str
    first: Answer
    cut: bool
    finished_ms: float | None = None  # suggestionFinished, from the first request written
    second: Answer | None = None
    final_ms: float | None = None  # first request written -> the answer the user ends with
    notifications: int = 0  # suggestionFinished received for this document
    fim: FimAnswer | None = None
    verdicts: dict[str, Verdict] = field(default_factory=dict)


# Rows


def is_single_line(row: Mapping[str, Any]) -> bool:
    """A row whose middle is one whole non-blank line (HumanEval's L<n>_L<n> rows)."""
    middle = str(row["canonical_solution"])
    return (middle.endswith("\n") and middle.count("\n") == 1 and bool(middle.strip())
            and str(row["prompt"]).endswith("\n"))


def task_of(row: Mapping[str, Any]) -> str:
    """The HumanEval task a row cuts a hole in: `MultiLineInfilling/HumanEval/7`."""
    return str(row["task_id"]).rsplit("/", 1)[0]


def make_hole(row: dict[str, Any]) -> Hole:
    """The row as a document with its one-line middle emptied to its indentation."""
    line = str(row["canonical_solution"]).rstrip("\n")
    indent = line[:len(line) - len(line.lstrip(" \t"))]
    return Hole(str(row["task_id"]), row, indent, line)


def pick_holes(rows: Sequence[dict[str, Any]], limit: int, seed: int) -> list[Hole]:
    """At most one single-line row per task, `limit` of them, chosen with `seed`: rows of
    one task share their prompt, and the server's cache of one would warm the other."""
    rng = random.Random(seed)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if is_single_line(row):
            by_task.setdefault(task_of(row), []).append(row)
    one_each = [rng.choice(group) for _, group in sorted(by_task.items())]
    return [make_hole(row) for row in rng.sample(one_each, min(limit, len(one_each)))]


def load_holes(config: WaitConfig) -> list[Hole]:
    """The holes of this run, from the shipped (or `--data-dir`) multi-line set."""
    try:
        return pick_holes(read_rows(config.data_dir, DATA), config.limit, config.seed)
    except InfillError as error:
        raise BenchError(str(error)) from error


def document_uri(index: int, hole: Hole) -> str:
    """A new file for every row, so every visit is a cold place."""
    name = hole.task_id.replace("MultiLineInfilling/", "").replace("/", "-")
    return (Path(tempfile.gettempdir()) / "flashls-bench-wait" / f"{index:03d}-{name}.py"
            ).as_uri()


# The server


class FinishedBoard:
    """`flashls/suggestionFinished` notifications by document, stamped on arrival."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self._events: dict[str, asyncio.Event] = {}

    def _event(self, uri: str) -> asyncio.Event:
        return self._events.setdefault(uri, asyncio.Event())

    def receive(self, params: Any, sequence: int) -> None:
        """Keep one notification (the client's reader calls this)."""
        document = params.get("textDocument") if isinstance(params, dict) else None
        uri = document.get("uri") if isinstance(document, dict) else None
        if isinstance(uri, str):
            self.arrivals.setdefault(uri, []).append(time.perf_counter())
            self._event(uri).set()

    async def wait(self, uri: str, timeout_s: float, after: float = 0.0) -> float | None:
        """When the first notification for `uri` that arrived after `after` (a
        `time.perf_counter()`) came; None if none comes within `timeout_s`."""
        deadline = time.perf_counter() + timeout_s
        while True:
            later = [at for at in self.arrivals.get(uri, []) if at > after]
            if later:
                return later[0]
            remaining = deadline - time.perf_counter()
            event = self._event(uri)
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), max(0.0, remaining))
            except TimeoutError:
                return None


class WaitDriver:
    """Visits every hole on one server: open, ask, wait for the rest if cut, ask again."""

    def __init__(self, client: LspClient, config: WaitConfig) -> None:
        self.client, self.config = client, config
        self.statuses = StatusBoard()
        self.finished = FinishedBoard()
        client.subscribe(STATUS_NOTIFICATION, self.statuses.receive)
        client.subscribe(FINISHED_NOTIFICATION, self.finished.receive)

    async def visit(self, index: int, hole: Hole) -> Place:
        """One row: a cold place, one request, and the wait an idle user gives it."""
        uri = document_uri(index, hole)
        await self.client.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": hole.text}})
        first, sent_at, _ = await self._ask(uri, hole)
        place = Place(hole.task_id, uri, hole.cursor.line, hole.canonical, first,
                      cut=first.finish in INCOMPLETE, final_ms=first.response_ms)
        if place.cut:
            await self._wait_for_the_rest(place, hole, sent_at)
        await self.client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        place.notifications = len(self.finished.arrivals.get(uri, []))
        return place

    async def _wait_for_the_rest(self, place: Place, hole: Hole, sent_at: float) -> None:
        """At each suggestionFinished, ask again at the same place, as the editor does,
        until an answer is whole or `wait_s` from the first request has passed."""
        place.final_ms = None
        deadline, asked_at = sent_at + self.config.wait_s, sent_at
        while True:
            finished_at = await self.finished.wait(
                place.uri, deadline - time.perf_counter(), after=asked_at)
            if finished_at is None:
                return
            place.finished_ms = (finished_at - sent_at) * 1000
            place.second, asked_at, arrived_at = await self._ask(place.uri, hole)
            if arrived_at is not None:
                place.final_ms = (arrived_at - sent_at) * 1000
            if place.second.finish not in INCOMPLETE:
                return

    async def _ask(self, uri: str, hole: Hole) -> tuple[Answer, float, float | None]:
        """One inline completion at the hole: the answer, when it was sent and answered."""
        pending = await self.client.send_request(INLINE_COMPLETION,
                                                 completion_params(uri, hole.cursor))
        response = await self.client.wait(pending, self.config.request_timeout_s)
        if response is None:
            await self.client.cancel(pending.request_id)
            return Answer("timeout"), pending.sent_at, None
        answer = self._answer(uri, hole, response, pending.sent_at)
        return answer, pending.sent_at, response.arrived_at

    def _answer(self, uri: str, hole: Hole, response: Response, sent_at: float) -> Answer:
        response_ms = (response.arrived_at - sent_at) * 1000
        if response.error is not None:
            return Answer("error", response_ms=response_ms)
        status = self.statuses.claim(uri, hole.cursor, response.sequence)
        text = shown_text(response.result, hole.indent, hole.cursor.line)
        return Answer("answered", text, **server_fields(status, response_ms))


def completion_params(uri: str, cursor: Position) -> dict[str, Any]:
    """`textDocument/inlineCompletion` at `cursor` in `uri`, triggered automatically."""
    return {"textDocument": {"uri": uri}, "position": cursor.to_lsp(),
            "context": {"triggerKind": TRIGGER_AUTOMATIC}}


def server_command(config: WaitConfig) -> list[str]:
    """`python -m flashls serve` with the `--server-arg`s."""
    return [sys.executable, "-m", "flashls", "serve", *config.server_args]


async def run_server(holes: Sequence[Hole], config: WaitConfig) -> dict[str, Any]:
    """Start one server, warm it up, visit every hole, shut it down."""
    command = server_command(config)
    async with serving(command, "server", config.startup_timeout_s) as server:
        driver = WaitDriver(server.client, config)
        places = []
        for index, hole in enumerate(holes):
            places.append(await driver.visit(index, hole))
            _progress("server", index, len(holes), places[-1])
    return {"command": command, "startup_ms": server.startup_ms,
            "warmup_ms": server.warmup_ms, "places": places,
            "serve_s": time.perf_counter() - server.warm_at}


# The plain FIM call


def served_settings(server_args: Sequence[str]) -> tuple[str, settings.Settings]:
    """The engine kind and settings that `flashls serve` gets from these arguments (and
    the environment), so the plain call runs the server's model."""
    parser = argparse.ArgumentParser(add_help=False)
    settings.add_arguments(parser)
    known, _ = parser.parse_known_args(list(server_args))
    config, _ = settings.from_arguments(known)
    return settings.engine_switch(known), config


def plain_engine(server_args: Sequence[str]) -> Engine:
    """The server's model with nothing of flashls around it: the whole prompt evaluated,
    no token healing."""
    kind, config = served_settings(server_args)
    if kind == "fake":
        from flashls.engine.fake import FakeEngine

        return FakeEngine()
    from flashls.engine.llama import LlamaEngine

    return LlamaEngine(dataclasses.replace(config, reuse_kv_prefix=False, reuse_suffix=False,
                                           token_healing=False, snapshot_mb=0))


def end_of_line(text: str) -> int | None:
    """Stop rule: cut at the first line break."""
    found = text.find("\n")
    return None if found < 0 else found


def plain_fim(engine: Engine, hole: Hole, max_tokens: int) -> FimAnswer:
    """The model's own FIM prompt from the whole row, greedy, up to the end of the line."""
    started = time.perf_counter()
    result = engine.generate(GenerationRequest(
        prefix=str(hole.row["prompt"]), suffix=str(hole.row["suffix"]), max_tokens=max_tokens,
        stop=end_of_line), CancelToken())
    return FimAnswer(result.text, result.finish, (time.perf_counter() - started) * 1000,
                     result.timings.prompt_tokens, result.timings.generated_tokens)


def run_plain_fim(holes: Sequence[Hole], config: WaitConfig) -> tuple[str, list[FimAnswer]]:
    """The plain call over every hole, after the server has gone (no shared CPU)."""
    engine = plain_engine(config.server_args)
    try:
        engine.load()
        answers = []
        for index, hole in enumerate(holes):
            answers.append(plain_fim(engine, hole, config.fim_max_tokens))
            print(f"[{index + 1}/{len(holes)}] fim {hole.task_id}: {answers[-1].ms:.0f} ms",
                  file=sys.stderr, flush=True)
        return engine.describe(), answers
    finally:
        engine.close()


# Scoring


def server_line(hole: Hole, shown: str) -> str | None:
    """What a server suggestion puts in the hole: the indentation already there, then the
    suggestion's first line; None when that line is blank (nothing to accept)."""
    line = shown.split("\n", 1)[0]
    return hole.indent + line if line.strip() else None


def fim_line(answer: FimAnswer) -> str | None:
    """What the plain call puts in the hole: its whole line, indentation included."""
    return answer.text if answer.text.strip() else None


def judge(hole: Hole, line: str | None, verdicts: dict[str, bool]) -> Verdict:
    """Exact (stripped) and pass@1 of one line in the hole; `verdicts` caches test runs."""
    if line is None:
        return Verdict(None)
    if line not in verdicts:
        verdicts[line] = passes_tests(hole.row, line + "\n")
    return Verdict(line, exact=line.strip() == hole.canonical.strip(), passed=verdicts[line])


def view_lines(place: Place, hole: Hole, screen_ms: float) -> dict[str, str | None]:
    """The line each view puts in the hole."""
    first = place.first
    on_time = first.response_ms is not None and first.response_ms <= screen_ms
    waited = place.second if place.second is not None and place.second.outcome == "answered" \
        else first
    lines = {"screen": server_line(hole, first.text) if on_time else None,
             "first": server_line(hole, first.text),
             "waited": server_line(hole, waited.text)}
    if place.fim is not None:
        lines["fim"] = fim_line(place.fim)
    return lines


def score_place(place: Place, hole: Hole, screen_ms: float) -> None:
    """Fill in the verdicts of every view of one row."""
    verdicts: dict[str, bool] = {}
    place.verdicts = {view: judge(hole, line, verdicts)
                      for view, line in view_lines(place, hole, screen_ms).items()}


# Summary and output


def _p50_p90(values: Sequence[float | None]) -> dict[str, float | None]:
    return {**report.p50_p90(values), "count": sum(value is not None for value in values)}


def view_summary(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Shown, exact and pass@1 counts and rates of one view over all rows."""
    exact, passed = sum(v.exact for v in verdicts), sum(v.passed for v in verdicts)
    return {"rows": len(verdicts), "shown": sum(v.line is not None for v in verdicts),
            "exact": exact, "passed": passed, "exact_match": report.rate(exact, len(verdicts)),
            "pass_at_1": report.rate(passed, len(verdicts))}


def latency_summary(places: Sequence[Place]) -> dict[str, dict[str, float | None]]:
    """p50/p90 of the first answer, the final one, suggestionFinished and the plain call."""
    return {"first": _p50_p90([p.first.response_ms for p in places]),
            "final": _p50_p90([p.final_ms for p in places]),
            "finished": _p50_p90([p.finished_ms for p in places]),
            "fim": _p50_p90([p.fim.ms if p.fim else None for p in places])}


def summarize(places: Sequence[Place], screen_ms: float) -> dict[str, Any]:
    """The run's figures: views, cuts and what followed them, latencies."""
    cut = [p for p in places if p.cut]
    finished = [p for p in cut if p.finished_ms is not None]
    views = {view: view_summary([p.verdicts[view] for p in places if view in p.verdicts])
             for view in VIEWS if any(view in p.verdicts for p in places)}
    return {
        "rows": len(places), "cut": len(cut), "finished": len(finished),
        "unfinished": len(cut) - len(finished),
        "finished_uncut": sum(p.notifications > 0 for p in places if not p.cut),
        "first_after_screen": sum(p.first.response_ms is None or p.first.response_ms > screen_ms
                                  for p in places),
        "first_empty": sum(not p.first.text for p in places),
        "first_short_window": sum(bool((p.first.timings or {}).get("short_window"))
                                  for p in places),
        "first_outcomes": dict(Counter(p.first.outcome for p in places)),
        "first_finish": dict(Counter(str(p.first.finish) for p in places)),
        "second_answers": dict(Counter(f"{p.second.source}/{p.second.finish}"
                                       for p in places if p.second is not None)),
        "views": views, "latency_ms": latency_summary(places),
    }


def build_payload(config: WaitConfig, served: Mapping[str, Any], fim_model: str | None,
                  summary: Mapping[str, Any], run_s: float) -> dict[str, Any]:
    """Config, server start-up, summary and per-row results, ready for JSON."""
    return {
        **run_header("wait", config), "server_command": served["command"],
        "startup_ms": served["startup_ms"], "warmup_ms": served["warmup_ms"],
        "serve_s": served["serve_s"], "fim_model": fim_model, "run_s": run_s,
        "summary": summary, "rows": [dataclasses.asdict(p) for p in served["places"]],
    }


async def run_benchmark(config: WaitConfig) -> dict[str, Any]:
    """The server over every hole, then the plain call, then the scores."""
    started = time.perf_counter()
    holes = load_holes(config)
    if not holes:
        raise BenchError("no single-line row in the data")
    served = await run_server(holes, config)
    places: list[Place] = served["places"]
    fim_model = None
    if config.baseline:
        try:
            fim_model, answers = run_plain_fim(holes, config)
        except EngineError as error:
            raise BenchError(f"plain FIM: {error}") from error
        for place, answer in zip(places, answers, strict=True):
            place.fim = answer
    for place, hole in zip(places, holes, strict=True):
        score_place(place, hole, config.screen_ms)
    summary = summarize(places, config.screen_ms)
    return build_payload(config, served, fim_model, summary, time.perf_counter() - started)


def _progress(kind: str, index: int, total: int, place: Place) -> None:
    first = place.first
    done = ("" if not place.cut else f", finished at {place.finished_ms:.0f} ms"
            if place.finished_ms is not None else ", never finished")
    print(f"[{index + 1}/{total}] {kind} {place.task_id}: {first.outcome} "
          f"{first.finish} in {first.response_ms or 0:.0f} ms{done}", file=sys.stderr,
          flush=True)


def format_table(payload: Mapping[str, Any]) -> str:
    """The views' accuracy, the cuts, and the latencies, as aligned text."""
    summary, screen_ms = payload["summary"], payload["config"]["screen_ms"]
    rows = [("", "shown", "exact", "pass@1")]
    for view, figures in summary["views"].items():
        rows.append((VIEW_LABELS[view].format(screen_ms=screen_ms),
                     f"{figures['shown']}/{figures['rows']}",
                     report.percent(figures["exact_match"]), report.percent(figures["pass_at_1"])))
    rows.append(("latency ms", "rows", "p50", "p90"))
    for name in LATENCIES:
        stats = summary["latency_ms"][name]
        rows.append((LATENCY_LABELS[name], str(stats["count"]), report.fixed(stats["p50"], 0),
                     report.fixed(stats["p90"], 0)))
    lines = report.aligned(rows)
    lines.insert(len(summary["views"]) + 1, "")
    lines += ["", f"cut by the time budget: {summary['cut']}/{summary['rows']} "
                  f"(suggestionFinished for {summary['finished']}, never for "
                  f"{summary['unfinished']}); first answers after {screen_ms:g} ms: "
                  f"{summary['first_after_screen']}; empty first answers: "
                  f"{summary['first_empty']}"]
    return "\n".join(lines)


def write_plot(path: Path, payload: Mapping[str, Any]) -> None:
    """Exact and pass@1 of each view, and the latencies' distributions."""
    from matplotlib.figure import Figure  # imported late: matplotlib takes a while to load

    summary, screen_ms = payload["summary"], payload["config"]["screen_ms"]
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    score_axes, latency_axes = figure.subplots(1, 2)
    views = list(summary["views"])
    for offset, (key, label) in enumerate((("exact_match", "exact"), ("pass_at_1", "pass@1"))):
        score_axes.bar([index + 0.4 * offset for index in range(len(views))],
                       [summary["views"][view][key] or 0.0 for view in views], width=0.4,
                       label=label)
    score_axes.set_xticks([index + 0.2 for index in range(len(views))],
                          [PLOT_LABELS[view].format(screen_ms=screen_ms) for view in views])
    score_axes.set(ylim=(0, 1), ylabel="share of rows",
                   title=f"{summary['rows']} single-line HumanEval rows")
    _plot_latencies(latency_axes, payload["rows"], screen_ms)
    for axes in (score_axes, latency_axes):
        axes.grid(True, alpha=0.3)
        axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _plot_latencies(axes: Any, rows: Sequence[Mapping[str, Any]], screen_ms: float) -> None:
    """Empirical distribution of each latency, the on-screen moment dotted."""
    series = {"first": [row["first"]["response_ms"] for row in rows],
              "final": [row["final_ms"] for row in rows],
              "fim": [row["fim"]["ms"] if row["fim"] else None for row in rows]}
    for index, (name, values) in enumerate(series.items()):
        ordered = sorted(value for value in values if value is not None)
        if ordered:
            axes.step(ordered, [(rank + 1) / len(ordered) for rank in range(len(ordered))],
                      where="post", color=f"C{index}", label=LATENCY_LABELS[name])
    axes.axvline(screen_ms, color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="ms from the request (dotted: on-screen moment)",
             ylabel="fraction of rows", title="When the suggestion came", ylim=(0, 1.05))


# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `flashls bench wait`."""
    defaults = WaitConfig()
    parser.add_argument("--data-dir", default=defaults.data_dir, metavar="DIR",
                        help="folder holding the HumanEval infilling .jsonl.gz files "
                             "(default: %(default)s, or $FLASHLS_INFILL_DATA)")
    parser.add_argument("--limit", type=int, default=defaults.limit, metavar="N",
                        help="rows, one per HumanEval task, at most 164 "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed for choosing the rows (default: %(default)s)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `flashls serve`, repeatable; the plain FIM "
                             "call takes --engine, --model, --n-threads... from them too")
    parser.add_argument("--wait-s", type=float, default=defaults.wait_s,
                        help="how long the user waits for suggestionFinished after a cut "
                             "answer (default: %(default)s)")
    parser.add_argument("--screen-ms", type=float, default=defaults.screen_ms,
                        help="when the on-screen view is taken, from the request "
                             "(default: %(default)s)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction,
                        default=defaults.baseline,
                        help="also run the plain FIM call on each row (default: on)")
    parser.add_argument("--out-dir", default=defaults.out_dir, metavar="DIR",
                        help="where the JSON and PNG go (default: %(default)s)")
    parser.add_argument("--request-timeout-s", type=float, default=defaults.request_timeout_s,
                        help="longest wait for one answer (default: %(default)s)")
    parser.add_argument("--startup-timeout-s", type=float, default=defaults.startup_timeout_s,
                        help="longest wait for initialize and the warm-up request "
                             "(default: %(default)s)")


def config_from_arguments(arguments: argparse.Namespace) -> WaitConfig:
    """A WaitConfig from parsed options; nonsense values raise BenchError."""
    if arguments.limit < 1:
        raise BenchError("--limit must be at least 1")
    if min(arguments.wait_s, arguments.screen_ms, arguments.request_timeout_s) <= 0:
        raise BenchError("--wait-s, --screen-ms and --request-timeout-s must be positive")
    return WaitConfig(
        data_dir=arguments.data_dir, limit=arguments.limit, seed=arguments.seed,
        server_args=tuple(arguments.server_arg), wait_s=arguments.wait_s,
        screen_ms=arguments.screen_ms, baseline=arguments.baseline, out_dir=arguments.out_dir,
        request_timeout_s=arguments.request_timeout_s,
        startup_timeout_s=arguments.startup_timeout_s)


def _describe(config: WaitConfig, payload: dict[str, Any]) -> str:
    return (f"flashls bench wait: {payload['summary']['rows']} single-line HumanEval rows "
            f"(seed {config.seed}), {payload['run_s']:.0f} s; plain FIM on "
            f"{payload['fim_model'] or '-'}\n{format_table(payload)}")


def handler(arguments: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write the JSON and PNG."""
    return run_command("wait", arguments, config_from_arguments, run_benchmark,
                       write_plot, _describe)


HELP = "what a user who stops at a cold place and waits sees (HumanEval)"
DESCRIPTION = ("Open each single-line HumanEval row as a new file, ask once with the "
               "cursor on the emptied line, and when the time budget cuts the answer "
               "wait for flashls/suggestionFinished and ask again; score what was on "
               "screen and what the user ends with against a plain FIM call.")
