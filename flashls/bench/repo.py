"""`flashls bench repo`: completions that need a name defined in another file of the same
project, asked over LSP with the project as workspace and other files open, for several
variants of `flashls serve`, and asked of llama-server as plain fill-in-the-middle. Sites come
from `repo_sites.py`, scores from `repo_metrics.py`, the plain-FIM baseline from
`repo_fim.py`, the LSP client from `client.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from flashls.bench import report
from flashls.bench.client import LspClient, Response
from flashls.bench.harness import BenchError, run_header, serving
from flashls.bench.llama_server import llama_server_binary, model_file
from flashls.bench.replay import (
    INLINE_COMPLETION,
    STATUS_NOTIFICATION,
    StatusBoard,
    server_fields,
    shown_texts,
)
from flashls.bench.repo_fim import PLAIN_FIM, FimClient, FimReply, FimServer, started
from flashls.bench.repo_metrics import SCORE_NAMES, Score, completion_line, score, summarize
from flashls.bench.repo_sites import (
    DEFAULT_OPEN_FILES,
    DEFAULT_PER_FILE_MAX,
    PROJECT_SETS,
    Site,
    auto_closed,
    default_projects,
    find_sites,
    line_before_cursor,
    masked_document,
    open_files,
    sample_from,
)
from flashls.bench.trace import Position, read_source
from flashls.postprocess import over_closed

# name -> extra `flashls serve` flags: "current" is flashls at its defaults; PLAIN_FIM is
# no flashls at all but the plain fill-in-the-middle baseline (`repo_fim.py`).
DEFAULT_VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("current", ()),
    (PLAIN_FIM, ()),
)
# Every variant: the whole prompt is evaluated (no cold window) and the answer is neither cut
# by the time budget nor given in part, so what is measured is what the context gives, not
# what time allows.
FIXED_SERVER_ARGS = ("--time-budget-ms=600000", "--partial-answer-ms=0", "--cold-window-tokens=0",
                     "--multiline=never")
TRIGGER_INVOKED = 1
TEXT_CHARS_KEPT = 400
SECONDS_PER_SITE = 15  # default budgets on 2 CPU cores: ~1300 prompt tokens at ~100 tokens/s


@dataclass(frozen=True)
class RepoConfig:
    """Which projects and sites, which server variants, and how long to wait."""

    repos: tuple[str, ...] = ()
    projects: str = "held-out"  # a PROJECT_SETS name, its projects after `repos`; "": none
    sites: int = 300
    seed: int = 0
    open_files: int = DEFAULT_OPEN_FILES
    per_file_max: int = DEFAULT_PER_FILE_MAX
    limit_per_project: int | None = None
    variants: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_VARIANTS
    server_args: tuple[str, ...] = ()
    model: str = ""
    out_dir: str = "bench/results"
    auto_close: bool = False  # only sites inside a call, its `)` auto-closed (`auto_closed`)
    # name -> the command that starts that variant's server instead of `flashls serve`
    variant_commands: tuple[tuple[str, tuple[str, ...]], ...] = ()
    request_timeout_s: float = 300.0
    startup_timeout_s: float = 300.0
    # The plain-FIM baseline's llama-server: its binary ("": the one
    # scripts/build_llama_server.sh built, else one on PATH) and its threads (-t).
    llama_server_binary: str = ""
    fim_threads: int = 2


@dataclass
class Answer:
    """One variant's completion at one site, how long it took, and how it scores."""

    outcome: str  # answered | error | timeout
    text: str = ""  # the item's text after the cursor (clipped)
    line: str = ""  # its first line: what is scored
    latency_ms: float | None = None
    source: str | None = None
    finish: str | None = None
    prompt_tokens: int | None = None
    evaluated_tokens: int | None = None
    generated_tokens: int | None = None
    timings: dict[str, float] | None = None  # the server's status for it: where time went
    score: Score | None = None
    others: list[str] = field(default_factory=list)  # the other items' texts (clipped)
    exact_any: bool | None = None  # whether any item's first line is the target line
    # At an auto-closed site: whether the line with the first item inserted closes more
    # brackets than it opens (or has an odd quote count).
    over_closed: bool | None = None


@dataclass
class ServerRun:
    """One `flashls serve` for one (variant, project)."""

    variant: str
    project: str
    command: list[str]
    startup_ms: float
    warmup_ms: float


# The server


def server_command(config: RepoConfig, variant_args: Sequence[str],
                   variant: str = "") -> list[str]:
    """`flashls serve` (or the variant's own `--variant-command`) with the fixed flags,
    `--model`, the `--server-arg`s and the variant's own flags, later ones winning."""
    model = [f"--model={config.model}"] if config.model else []
    base = dict(config.variant_commands).get(variant) or (
        sys.executable, "-m", "flashls", "serve")
    return [*base, *FIXED_SERVER_ARGS, *model, *config.server_args, *variant_args]


def _open_params(path: str, text: str) -> dict[str, Any]:
    return {"textDocument": {"uri": Path(path).as_uri(), "languageId": "python",
                             "version": 1, "text": text}}


async def ask_site(client: LspClient, board: StatusBoard, site: Site,
                   opened: Sequence[str], timeout_s: float) -> Answer:
    """Open the other files in order, then the masked file; ask once at the cursor
    (Invoked, waited for); close them all, so the next site starts clean."""
    documents = [(path, read_source(path) or "") for path in opened]
    documents.append((site.path, masked_document(site)))
    for path, text in documents:
        await client.notify("textDocument/didOpen", _open_params(path, text))
    uri = Path(site.path).as_uri()
    cursor = Position(site.line, site.character)
    pending = await client.send_request(INLINE_COMPLETION, {
        "textDocument": {"uri": uri}, "position": cursor.to_lsp(),
        "context": {"triggerKind": TRIGGER_INVOKED}})
    response = await client.wait(pending, timeout_s)
    if response is None:
        await client.cancel(pending.request_id)
        answer = Answer("timeout")
    else:
        answer = _answer(board, site, uri, cursor, response, pending.sent_at)
    for path, _ in documents:
        await client.notify("textDocument/didClose",
                            {"textDocument": {"uri": Path(path).as_uri()}})
    return scored(site, answer, answer.text)


def scored(site: Site, answer: Answer, completion: str) -> Answer:
    """`answer` with its scores against the site's target: `completion`'s, every other
    item's, and whether its line over-closes an auto-closed site."""
    answer.score = score(completion, site.target)
    answer.exact_any = answer.score.exact_match or any(
        score(other, site.target).exact_match for other in answer.others)
    if site.suffix and answer.outcome == "answered":
        answer.over_closed = over_closed(line_before_cursor(site) + answer.line + site.suffix)
    return answer


def _answer(board: StatusBoard, site: Site, uri: str, cursor: Position, response: Response,
            sent_at: float) -> Answer:
    latency_ms = (response.arrived_at - sent_at) * 1000
    if response.error is not None:
        return Answer("error", latency_ms=latency_ms)
    texts = shown_texts(response.result, line_before_cursor(site), site.line)
    text = texts[0] if texts else ""
    status = board.claim(uri, cursor, response.sequence)
    fields = server_fields(status, latency_ms)
    prompt = (fields.get("timings") or {}).get("prompt_tokens")
    return Answer("answered", text[:TEXT_CHARS_KEPT], text.split("\n", 1)[0].rstrip("\r"),
                  latency_ms, fields.get("source"), fields.get("finish"),
                  None if prompt is None else int(prompt), fields.get("evaluated_tokens"),
                  fields.get("generated_tokens"), fields.get("timings"),
                  others=[other[:TEXT_CHARS_KEPT] for other in texts[1:]])


async def run_project(config: RepoConfig, variant: str, variant_args: Sequence[str],
                      sites: Sequence[Site], opened: Mapping[Site, list[str]],
                      done: Callable[[Site, Answer], None]) -> ServerRun:
    """One server with the sites' project as workspace: warm it up, ask at every site."""
    command = server_command(config, variant_args, variant)
    async with serving(command, f"{variant} server", config.startup_timeout_s,
                       sites[0].root, sites[0].project) as server:
        board = StatusBoard()
        server.client.subscribe(STATUS_NOTIFICATION, board.receive)
        for site in sites:
            done(site, await ask_site(server.client, board, site, opened[site],
                                      config.request_timeout_s))
    return ServerRun(variant, sites[0].project, command, server.startup_ms, server.warmup_ms)


# The plain-FIM baseline


def fim_server(config: RepoConfig) -> FimServer:
    """The llama-server the plain-FIM baseline starts; BenchError, saying how to get one,
    when its binary or model is missing."""
    binary = llama_server_binary(config.llama_server_binary)
    if not Path(binary).is_file():
        raise BenchError(f"no llama-server at {binary}: build one with "
                         "scripts/build_llama_server.sh (it prints where it put it)")
    return FimServer(binary, model_file(config.model), config.fim_threads)


async def run_plain_fim(config: RepoConfig, server: FimServer, sites: Sequence[Site],
                        done: Callable[[Site, Answer], None]) -> ServerRun:
    """One llama-server for the sites' project: warm it up, one FIM request a site."""
    begun = time.perf_counter()
    async with started(server, config.startup_timeout_s) as (command, endpoint):
        ready = time.perf_counter()
        async with httpx.AsyncClient(base_url=endpoint) as http:
            client = FimClient(http, config.request_timeout_s)
            try:
                await client.warm_up()
            except httpx.HTTPError as error:
                raise BenchError(f"{PLAIN_FIM}: warm-up /completion failed: {error}") from error
            warm = time.perf_counter()
            for site in sites:
                reply = await client.complete(site)
                done(site, fim_answer(site, reply))
    return ServerRun(PLAIN_FIM, sites[0].project, command, (ready - begun) * 1000,
                     (warm - ready) * 1000)


def fim_answer(site: Site, reply: FimReply) -> Answer:
    """A plain-FIM reply as an Answer, scored as the flashls variants' are; its suggestion
    is the first line of what the model wrote, nothing else cleaned."""
    line = completion_line(reply.content)
    answer = Answer(reply.outcome, reply.content[:TEXT_CHARS_KEPT], line, reply.latency_ms,
                    "model" if reply.outcome == "answered" else None, reply.finish,
                    reply.prompt_tokens, reply.evaluated_tokens, reply.generated_tokens,
                    reply.timings or None)
    return scored(site, answer, line)


# The run


def project_roots(config: RepoConfig) -> list[str]:
    """The `--repo` directories, then those of the `--projects` set."""
    roots = [*config.repos, *(default_projects(config.projects) if config.projects else [])]
    missing = [root for root in roots if not Path(root).is_dir()]
    if missing:
        raise BenchError(f"not a directory: {', '.join(missing)}")
    if not roots:
        raise BenchError(f"no project: none of {', '.join(PROJECT_SETS[config.projects])} "
                         "is installed here; give --repo DIR")
    return list(dict.fromkeys(roots))


def pick_sites(config: RepoConfig) -> tuple[list[Site], list[str]]:
    """The run's sites, and the projects left out for having none; BenchError when no
    project has any."""
    found = {root: find_sites(root) for root in project_roots(config)}
    skipped = [root for root, sites in found.items() if not sites]
    for root in skipped:
        print(f"flashls bench repo: skipping {root}: no line uses a name defined in another "
              "of its files", file=sys.stderr)
    sites = sample_from([sites for sites in found.values() if sites], config.sites,
                        config.seed, config.per_file_max, config.limit_per_project)
    if config.auto_close:
        sites = [closed for closed in map(auto_closed, sites) if closed is not None]
    if not sites:
        raise BenchError("no line in these projects uses a name defined in another of "
                         "their files")
    return sites, skipped


def by_project(sites: Sequence[Site]) -> dict[str, list[Site]]:
    """The sites grouped by project root, projects in order of first appearance."""
    groups: dict[str, list[Site]] = {}
    for site in sites:
        groups.setdefault(site.root, []).append(site)
    return groups


class Run:
    """The answers gathered so far, and the payload they make."""

    def __init__(self, config: RepoConfig, sites: Sequence[Site],
                 opened: Mapping[Site, list[str]], skipped: Sequence[str] = ()) -> None:
        self.config, self.sites, self.opened = config, list(sites), opened
        self.skipped = list(skipped)  # projects without a site
        self.answers: dict[Site, dict[str, Answer]] = {site: {} for site in sites}
        self.servers: list[ServerRun] = []
        self.started = time.perf_counter()

    def record(self, variant: str, site: Site, answer: Answer) -> None:
        """Keep one answer."""
        self.answers[site][variant] = answer
        _progress(sum(len(done) for done in self.answers.values()),
                  len(self.sites) * len(self.config.variants), variant, site, answer)

    def payload(self, complete: bool) -> dict[str, Any]:
        """Config, projects, summary per variant and per-site records, ready for JSON."""
        config = self.config
        return {
            **run_header("repo", config), "complete": complete,
            "run_s": time.perf_counter() - self.started,
            "projects": {group[0].project: {"root": root, "sites": len(group)}
                         for root, group in by_project(self.sites).items()},
            "skipped_projects": self.skipped,
            "variants": {name: {"args": list(args),
                                "servers": [dataclasses.asdict(run) for run in self.servers
                                            if run.variant == name]}
                         for name, args in config.variants},
            "summary": {name: self.summary(name) for name, _ in config.variants},
            "sites": [self.site_record(site) for site in self.sites],
        }

    def summary(self, variant: str) -> dict[str, Any]:
        """One variant's scores, latencies and prompt sizes over the sites it has done."""
        answers = [(site, done[variant]) for site, done in self.answers.items()
                   if variant in done]
        outcomes: dict[str, int] = {}
        per_project: dict[str, int] = {}
        for site, answer in answers:
            outcomes[answer.outcome] = outcomes.get(answer.outcome, 0) + 1
            per_project[site.project] = per_project.get(site.project, 0) + 1
        summary = summarize(
            [answer.score for _, answer in answers if answer.score is not None],
            [a.latency_ms for _, a in answers
             if a.outcome == "answered" and a.latency_ms is not None],
            [a.prompt_tokens for _, a in answers if a.prompt_tokens is not None])
        opened = [site.defined_in in self.opened[site] for site, _ in answers]
        scored = [a for _, a in answers if a.exact_any is not None]
        summary["exact_match_any"] = (sum(bool(a.exact_any) for a in scored) / len(scored)
                                      if scored else None)
        summary["candidates"] = (sum(1 + len(a.others) for a in scored) / len(scored)
                                 if scored else None)
        closed = [a.over_closed for _, a in answers if a.over_closed is not None]
        summary["over_closed"] = sum(closed) / len(closed) if closed else None
        return {"sites": len(answers), "outcomes": outcomes, **summary,
                "sites_per_project": per_project,
                "defining_file_open": sum(opened) / len(opened) if opened else None}

    def site_record(self, site: Site) -> dict[str, Any]:
        """A site, the files open beside it, and every variant's answer."""
        opened = self.opened[site]
        return {**dataclasses.asdict(site), "open_files": opened,
                "defining_file_open": site.defined_in in opened,
                "answers": {name: dataclasses.asdict(answer)
                            for name, answer in self.answers[site].items()}}


async def run_benchmark(config: RepoConfig,
                        checkpoint: Callable[[dict[str, Any]], None] | None = None,
                        ) -> dict[str, Any]:
    """Every project, and for each every variant's server over its sites; `checkpoint`
    gets the payload after each site."""
    sites, skipped = pick_sites(config)
    # Found before any server starts: a missing llama-server fails the run at once.
    fim = fim_server(config) if PLAIN_FIM in dict(config.variants) else None
    opened = {site: open_files(site, config.open_files, config.seed) for site in sites}
    run = Run(config, sites, opened, skipped)

    def done(variant: str) -> Callable[[Site, Answer], None]:
        def keep(site: Site, answer: Answer) -> None:
            run.record(variant, site, answer)
            if checkpoint is not None:
                checkpoint(run.payload(complete=False))
        return keep

    # Project by project, every variant on it, so a run read while it goes compares
    # the variants on the same projects.
    for group in by_project(sites).values():
        for name, args in config.variants:
            if name == PLAIN_FIM and fim is not None:
                run.servers.append(await run_plain_fim(config, fim, group, done(name)))
            else:
                run.servers.append(await run_project(config, name, args, group, opened,
                                                     done(name)))
    return run.payload(complete=True)


def _progress(index: int, total: int, variant: str, site: Site, answer: Answer) -> None:
    verdict = answer.score
    marks = ("exact" if verdict.exact_match else f"es={verdict.edit_similarity:.2f}"
             ) if verdict is not None else "-"
    latency = "-" if answer.latency_ms is None else f"{answer.latency_ms:.0f} ms"
    print(f"[{index}/{total}] {variant} {site.module}:{site.line + 1} {site.name}: "
          f"{answer.outcome} {marks} {latency}", file=sys.stderr, flush=True)


# Output


def format_table(payload: Mapping[str, Any]) -> str:
    """One row a variant: sites, the scores, latency and prompt tokens."""
    rows = [("variant", "sites", "exact", "first line", "edit sim", "ident EM", "ident F1",
             "exact any", "items", "over-closed", "p50 ms", "p90 ms", "prompt p50",
             "prompt p90")]
    for name, summary in payload["summary"].items():
        rows.append((name, str(summary["sites"]),
                     *(report.percent(summary[key]) for key in SCORE_NAMES),
                     report.percent(summary.get("exact_match_any")),
                     "-" if summary.get("candidates") is None
                     else f"{summary['candidates']:.1f}",
                     report.percent(summary.get("over_closed")),
                     report.fixed(summary["latency_ms"]["p50"], 0),
                     report.fixed(summary["latency_ms"]["p90"], 0),
                     report.fixed(summary["prompt_tokens"]["p50"], 0),
                     report.fixed(summary["prompt_tokens"]["p90"], 0)))
    return "\n".join(report.aligned(rows))


PLOTTED_SCORES = (("exact_match", "exact match"), ("edit_similarity", "edit similarity"),
                  ("identifier_f1", "identifier F1"))


def write_plot(path: Path, payload: Mapping[str, Any]) -> None:
    """Exact match, edit similarity and identifier F1 per variant; latency p50/p90."""
    from matplotlib.figure import Figure  # imported late: matplotlib takes a while to load

    summary = payload["summary"]
    names = list(summary)
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    score_axes, latency_axes = figure.subplots(1, 2)
    width = 0.8 / len(PLOTTED_SCORES)
    for offset, (key, label) in enumerate(PLOTTED_SCORES):
        score_axes.bar([index + offset * width for index in range(len(names))],
                       [summary[name][key] or 0.0 for name in names], width=width, label=label)
    score_axes.set_xticks([index + width for index in range(len(names))], names)
    sites = max((summary[name]["sites"] for name in names), default=0)
    score_axes.set(ylim=(0, 1), ylabel="mean over sites",
                   title=f"Cross-file completions ({sites} sites)")
    for offset, stat in enumerate(("p50", "p90")):
        latency_axes.bar([index + offset * 0.4 for index in range(len(names))],
                         [summary[name]["latency_ms"][stat] or 0.0 for name in names],
                         width=0.4, label=stat)
    latency_axes.set_xticks([index + 0.2 for index in range(len(names))], names)
    latency_axes.set(ylabel="ms from the request", title="Latency (cold prompt, uncut)")
    for axes in (score_axes, latency_axes):
        axes.grid(True, axis="y", alpha=0.3)
        axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


# Command line


def parse_variant(text: str) -> tuple[str, tuple[str, ...]]:
    """`NAME=ARGS` -> (NAME, ARGS split like a shell would), `plain-fim` -> (`plain-fim`,
    ()); BenchError when malformed."""
    name, equals, args = text.partition("=")
    if name.strip() == PLAIN_FIM:
        if args.strip():
            raise BenchError(f"--variant {text!r}: {PLAIN_FIM} is the plain FIM baseline, "
                             "not a `flashls serve`; it takes no flags")
        return PLAIN_FIM, ()
    if not equals or not name.strip():
        raise BenchError(f"--variant {text!r}: expected NAME=ARGS, e.g. "
                         f"defs=--context-sources=definitions (ARGS may be empty), or "
                         f"{PLAIN_FIM}")
    return name.strip(), tuple(shlex.split(args))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `flashls bench repo`."""
    defaults = RepoConfig()
    parser.add_argument("--repo", action="append", default=[], metavar="DIR",
                        help="a project directory (a package such as httpx), repeatable; "
                             "with it, --projects is not used unless given")
    parser.add_argument("--projects", choices=sorted(PROJECT_SETS), default=None,
                        help="a set of projects found in this Python: held-out (installed "
                             f"packages flashls was not tuned on: "
                             f"{', '.join(PROJECT_SETS['held-out'])}) or stdlib (standard-"
                             f"library packages it was tuned on: "
                             f"{', '.join(PROJECT_SETS['stdlib'])}) (default: held-out, "
                             "unless --repo is given)")
    parser.add_argument("--sites", type=int, default=defaults.sites, metavar="N",
                        help="masked sites, spread across projects and files "
                             "(default: %(default)s)")
    parser.add_argument("--limit-per-project", type=int, default=None, metavar="N",
                        help="at most N sites from one project (default: no limit)")
    parser.add_argument("--per-file-max", type=int, default=defaults.per_file_max,
                        metavar="N", help="at most N sites from one file (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed for the sites and the open files (default: %(default)s)")
    parser.add_argument("--open-files", type=int, default=defaults.open_files, metavar="K",
                        help="other files of the project open beside the site's, about half "
                             "of them modules it imports (default: %(default)s)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="a server variant: NAME and its extra `flashls serve` flags, "
                             "space-separated (ARGS may be empty), or `plain-fim`: one plain "
                             "fill-in-the-middle request a site to a llama-server started "
                             "here, its answer's first line uncleaned; repeatable (default: "
                             + "; ".join(f"{name}={' '.join(args)}" if name != PLAIN_FIM
                                         else name for name, args in DEFAULT_VARIANTS) + ")")
    parser.add_argument("--variant-command", action="append", default=[],
                        metavar="NAME=CMD",
                        help="start variant NAME's server with CMD instead of this "
                             "Python's `flashls serve` (split like a shell would), e.g. an "
                             "older checkout's: 'old=env PYTHONPATH=/tmp/old python -P -m "
                             "flashls serve'; the variant is added if --variant has no NAME")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every variant's `flashls serve`, repeatable "
                             f"(after {' '.join(FIXED_SERVER_ARGS)}, which they may "
                             "override)")
    parser.add_argument("--auto-close", action="store_true",
                        help="of the sampled sites, those whose target calls something with "
                             "arguments, with the cursor after the call's `(` and an "
                             "editor's auto-closed `)` after it; the arguments are the "
                             "target, and `over-closed` counts lines the answer over-closes")
    parser.add_argument("--model", default=defaults.model,
                        help="GGUF path or model name, for every variant (default: the "
                             "default model)")
    parser.add_argument("--llama-server-binary", default=defaults.llama_server_binary,
                        metavar="PATH", help="the llama-server plain-fim starts (default: "
                        "the one scripts/build_llama_server.sh built, else one on PATH)")
    parser.add_argument("--fim-threads", type=int, default=defaults.fim_threads,
                        metavar="N", help="plain-fim's llama-server threads, -t "
                        "(default: %(default)s)")
    parser.add_argument("--timeout-s", type=float, default=defaults.request_timeout_s,
                        help="longest wait for one completion (default: %(default)s)")
    parser.add_argument("--out", default=defaults.out_dir, metavar="DIR",
                        help="where repo-<timestamp>.json (rewritten after every site) and "
                             ".png go (default: %(default)s)")


def config_from_arguments(arguments: argparse.Namespace) -> RepoConfig:
    """A RepoConfig from parsed options; nonsense values raise BenchError."""
    if min(arguments.sites, arguments.per_file_max) < 1 or arguments.open_files < 0:
        raise BenchError("--sites and --per-file-max must be at least 1, --open-files at "
                         "least 0")
    if arguments.limit_per_project is not None and arguments.limit_per_project < 1:
        raise BenchError("--limit-per-project must be at least 1")
    if arguments.timeout_s <= 0:
        raise BenchError("--timeout-s must be positive")
    if arguments.fim_threads < 1:
        raise BenchError("--fim-threads must be at least 1")
    variants = tuple(parse_variant(text) for text in arguments.variant) or DEFAULT_VARIANTS
    commands = tuple(parse_variant(text) for text in arguments.variant_command)
    if any(not command for _, command in commands):
        raise BenchError("--variant-command needs a command after NAME=")
    variants += tuple((name, ()) for name, _ in commands
                      if name not in dict(variants))
    names = [name for name, _ in variants]
    if len(set(names)) < len(names):
        raise BenchError(f"variant names must differ: {', '.join(names)}")
    if PLAIN_FIM in dict(commands):
        raise BenchError(f"--variant-command: {PLAIN_FIM} is the plain FIM baseline; "
                         "choose another name")
    return RepoConfig(
        repos=tuple(str(Path(repo).resolve()) for repo in arguments.repo),
        projects=arguments.projects or ("" if arguments.repo else "held-out"),
        sites=arguments.sites, seed=arguments.seed, open_files=arguments.open_files,
        per_file_max=arguments.per_file_max, limit_per_project=arguments.limit_per_project,
        variants=variants, server_args=tuple(arguments.server_arg), model=arguments.model,
        out_dir=arguments.out, request_timeout_s=arguments.timeout_s,
        auto_close=arguments.auto_close, variant_commands=commands,
        llama_server_binary=arguments.llama_server_binary, fim_threads=arguments.fim_threads)


def handler(arguments: argparse.Namespace) -> int:
    """Run the benchmark, writing the JSON after every site; print the table, plot."""
    try:
        if (missing := report.plotting_missing()) is not None:
            raise BenchError(missing)
        config = config_from_arguments(arguments)
        json_path, plot_path = report.report_paths(Path(config.out_dir), "repo")
        payload = asyncio.run(run_benchmark(
            config, lambda part: report.write_json(json_path, part)))
    except BenchError as error:
        print(f"flashls bench repo: {error}", file=sys.stderr)
        return 1
    report.write_json(json_path, payload)
    write_plot(plot_path, payload)
    projects = ", ".join(f"{name} {figures['sites']}"
                         for name, figures in payload["projects"].items())
    print(f"flashls bench repo: {len(payload['sites'])} sites ({projects}), "
          f"{config.open_files} other files open, {payload['run_s']:.0f} s")
    print(format_table(payload))
    print(f"wrote {json_path} and {plot_path}")
    return 0


HELP = "cross-file completions in real projects, per server variant"
DESCRIPTION = ("Mask the rest of lines that use a name defined in another file of the "
               "same project (the cursor before the name), open the project as the "
               "workspace with a few of its other files open, ask once at the cursor, "
               "and score exact match, edit similarity and identifier match for each "
               "server variant, and for the plain-fim baseline (one plain "
               "fill-in-the-middle request to llama-server). Each site is a cold "
               f"prompt evaluated whole: about {SECONDS_PER_SITE} s a site and variant "
               "on 2 CPU cores with the default budgets (300 sites x 2 variants: about "
               "2.5 hours); shorten with --sites, --limit-per-project or smaller "
               "--server-arg budgets.")
