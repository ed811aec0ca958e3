"""Tests of `flashls bench latency`: traces, hit accounting, statistics and output files.

Most run against a small fake LSP server written below, so they need neither a model nor
`flashls serve`; the last one drives the real server with its fake engine when it exists.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy
import pytest

from flashls.bench import trace
from flashls.bench.latency import BenchConfig, naive_flags, run_benchmark
from flashls.bench.replay import RequestRecord, server_fields, shown_text, shown_texts
from flashls.bench.report import overhead_share, percentile, summarize
from flashls.cli import main

FAKE_SERVER = r'''
import json, sys, time
from pathlib import Path
from urllib.parse import unquote, urlparse

args = sys.argv[1:]

def option(name, default):
    return float(args[args.index(name) + 1]) if name in args else default

naive = "--no-reuse-kv-prefix" in args
delay_ms = option("--naive-delay-ms" if naive else "--delay-ms", option("--delay-ms", 0))
hang_at, crash_at = int(option("--hang-at", -1)), int(option("--crash-at", -1))
statuses = "--status" in args
log = open(args[args.index("--log") + 1], "a") if "--log" in args else None

def record(entry):
    if log:
        log.write(json.dumps(entry) + "\n")
        log.flush()

def read():
    length = 0
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return None
        if line == b"\r\n":
            return json.loads(sys.stdin.buffer.read(length))
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)

def send(message):
    body = json.dumps(message).encode()
    sys.stdout.buffer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    sys.stdout.buffer.flush()

def index_of(text, units):
    count = 0
    for index, char in enumerate(text):
        if count >= units:
            return index
        count += 2 if ord(char) > 0xFFFF else 1
    return len(text)

def apply(text, change):
    lines = text.split("\n")
    start, end = change["range"]["start"], change["range"]["end"]
    assert start == end, "the benchmark only inserts"
    line = lines[start["line"]]
    at = index_of(line, start["character"])
    lines[start["line"]] = line[:at] + change["text"] + line[at:]
    return "\n".join(lines)

def answer(documents, params):
    uri, position = params["textDocument"]["uri"], params["position"]
    path = Path(unquote(urlparse(uri).path))
    if not path.exists():
        return []
    line = documents[uri].split("\n")[position["line"]]
    typed = line[:index_of(line, position["character"])].lstrip()
    indent = len(line) - len(line.lstrip())
    original = path.read_text().split("\n")[position["line"]].strip()
    if not original.startswith(typed):
        return [{"insertText": "DESYNC"}]
    rest = original[len(typed):]
    if len(typed) % 3 == 0:  # the exact rest, repeated typed text and a second line included
        replaced = {"start": {"line": position["line"], "character": indent}, "end": position}
        return {"items": [{"insertText": typed + rest + "\nnext_line()", "range": replaced}]}
    if len(typed) % 3 == 1:
        return [{"insertText": rest[:2]}]
    return [{"insertText": "nonsense()"}]

STAGES = {"context_ms": 1.0, "queue_ms": 2.0, "tokenize_ms": 3.0, "prompt_ms": 4.0,
          "generate_ms": 5.0, "postprocess_ms": 6.0, "total_ms": 21.0}

def status(uri, position, source, timings):
    send({"jsonrpc": "2.0", "method": "flashls/status", "params": {
        "state": "ready", "message": "stop", "latencyMs": timings["total_ms"], "uri": uri,
        "line": position["line"], "character": position["character"], "source": source,
        "timings": timings}})

def send_statuses(documents, params):
    """Decoys around the one that counts: every third keystroke is a cache answer; a model
    answer evaluates 100 tokens on a line's first keystroke, then one per character typed."""
    uri, position = params["textDocument"]["uri"], params["position"]
    line = documents[uri].split("\n")[position["line"]]
    typed = len(line[:index_of(line, position["character"])].lstrip())
    send({"jsonrpc": "2.0", "method": "flashls/status",
          "params": {"state": "loading", "message": "no cursor here"}})
    status(uri, position, "cache", {"total_ms": 999.0})  # superseded by the next one
    status(uri, {**position, "character": position["character"] + 1}, "model",
           {**STAGES, "evaluated_tokens": 5000, "generated_tokens": 5000})
    if typed % 3 == 0:
        status(uri, position, "cache", {"total_ms": 1.5})
    else:
        status(uri, position, "model", {**STAGES, "prompt_tokens": 300,
                                        "evaluated_tokens": 100 if typed == 1 else typed,
                                        "generated_tokens": 7})

def after_answer(uri, position):
    status(uri, position, "model", {**STAGES, "evaluated_tokens": 7777, "total_ms": 1e6})

record({"argv": args})
documents, served = {}, 0
while True:
    message = read()
    if message is None:
        break
    record(message)
    method, params = message.get("method"), message.get("params")
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": message["id"], "result": {"capabilities": {
            "textDocumentSync": 2, "inlineCompletionProvider": {}}}})
    elif method == "initialized":
        send({"jsonrpc": "2.0", "id": "cfg-1", "method": "workspace/configuration",
              "params": {"items": [{"section": "flashls"}]}})
        send({"jsonrpc": "2.0", "method": "window/logMessage",
              "params": {"type": 3, "message": "fake server ready"}})
    elif method == "textDocument/didOpen":
        documents[params["textDocument"]["uri"]] = params["textDocument"]["text"]
    elif method == "textDocument/didChange":
        uri = params["textDocument"]["uri"]
        for change in params["contentChanges"]:
            documents[uri] = apply(documents[uri], change)
    elif method == "textDocument/inlineCompletion":
        served += 1
        if served == crash_at:
            print("fake server crashing on purpose", file=sys.stderr, flush=True)
            sys.exit(3)
        if served == hang_at:
            continue
        time.sleep(delay_ms / 1000)
        if statuses:
            send_statuses(documents, params)
        send({"jsonrpc": "2.0", "id": message["id"], "result": answer(documents, params)})
        if statuses:
            after_answer(params["textDocument"]["uri"], params["position"])
    elif method == "shutdown":
        send({"jsonrpc": "2.0", "id": message["id"], "result": None})
    elif method == "exit":
        break
'''

SOURCE = '''"""A module docstring long enough to be picked if docstrings were not skipped."""
# a comment line that is also long enough to be picked by mistake
def f(a, b):
    total = compute(alpha, beta)
    return total
'''
BODY = "total = compute(alpha, beta)"


@pytest.fixture
def fake_server(tmp_path: Path) -> Path:
    """The fake server script on disk."""
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    return script


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    """A file with exactly one line worth re-typing: BODY."""
    path = tmp_path / "example.py"
    path.write_text(SOURCE)
    return path


def _server_command(script: Path, *options: str) -> tuple[str, ...]:
    return (sys.executable, str(script), *options)


def _config(source: Path, command: tuple[str, ...], **changes: Any) -> BenchConfig:
    values: dict[str, Any] = {"files": (str(source),), "sites": 1, "baseline": "none",
                              "server_command": command, "request_timeout_s": 10.0,
                              "startup_timeout_s": 20.0}
    values.update(changes)
    return BenchConfig(**values)


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _apply_insert(text: str, line: int, character: int, inserted: str) -> str:
    """An LSP insertion, done independently of the trace module."""
    lines = text.splitlines(keepends=True)
    if line == len(lines):  # LSP counts the empty line after a final line break
        lines.append("")
    units = lines[line].encode("utf-16-le")
    at = len(units[: 2 * character].decode("utf-16-le"))
    lines[line] = lines[line][:at] + inserted + lines[line][at:]
    return "".join(lines)


def test_replayed_edits_rebuild_every_line_exactly(tmp_path: Path) -> None:
    text = ("import os\r\n"
            "def greet(name):\r\n"
            "\tmessage = f'héllo {name} 🙂 wörld' + name\r\n"
            "\treturn {'key': 'väl', 'emoji': '🙂🙂'}  # trailing\r\n"
            "value = [1, 2, 3] + [4, 5, 6]")
    path = tmp_path / "mixed.py"
    path.write_bytes(text.encode("utf-8"))
    sites = trace.pick_sites([str(path)], count=10, seed=1)
    assert sorted(site.line for site in sites) == [1, 2, 3, 4]
    for one in trace.build_traces(sites, max_keystrokes=1000):
        document = one.open_text
        assert [k.version for k in one.keystrokes] == list(range(2, len(one.keystrokes) + 2))
        for keystroke in one.keystrokes:
            document = _apply_insert(document, keystroke.insert_at.line,
                                     keystroke.insert_at.character, keystroke.text)
            line_text = document.splitlines()[one.site.line]
            cursor_index = len(line_text.encode("utf-16-le")[
                : 2 * keystroke.cursor.character].decode("utf-16-le"))
            assert line_text[cursor_index:] == ""  # the cursor sits at the end of what is typed
            assert keystroke.rest == one.site.body[keystroke.typed:]
        assert document == text


def test_sites_skip_comments_docstrings_and_short_lines(source_file: Path) -> None:
    text = source_file.read_text()
    assert trace.candidate_lines(str(source_file), text) == [3]
    site = trace.pick_sites([str(source_file)], count=5, seed=0)
    assert [(s.line, s.indent, s.body) for s in site] == [(3, "    ", BODY)]


def test_site_choice_follows_the_seed(tmp_path: Path) -> None:
    files = []
    for number in range(6):
        path = tmp_path / f"module_{number}.py"
        path.write_text("".join(f"value_{i} = compute_{number}(left, right)\n"
                                for i in range(30)))
        files.append(str(path))
    first = trace.pick_sites(files, count=8, seed=3)
    assert first == trace.pick_sites(files, count=8, seed=3)
    assert first != trace.pick_sites(files, count=8, seed=4)
    assert len({(s.path, s.line) for s in first}) == 8
    assert len({s.path for s in first}) == 6  # every file before any file twice


def test_default_corpus_is_the_standard_library_without_tests() -> None:
    files = trace.default_corpus()
    assert any(path.endswith("/json/decoder.py") for path in files)
    assert not any("/test/" in path or "site-packages" in path for path in files)
    assert all(Path(path).stat().st_size <= trace.MAX_FILE_BYTES for path in files)


def test_percentiles_match_numpy() -> None:
    values = [12.0, 3.5, 7.25, 100.0, 41.0, 8.0, 9.5]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(numpy.percentile(values, q))
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([], 50) is None


async def test_hits_count_exact_rest_and_partials_separately(
        fake_server: Path, source_file: Path) -> None:
    payload = await run_benchmark(_config(source_file, _server_command(fake_server)))
    summary = payload["variants"]["flashls"]["summary"]
    # 28 keystrokes; the last leaves nothing to type. The fake answers the exact rest when
    # 3 divides the typed length (9 times), two characters of it at 1 mod 3 (9 times,
    # all shorter than the rest), and nonsense otherwise.
    assert (summary["requests"], summary["answered"], summary["eligible"]) == (28, 28, 27)
    assert (summary["hits"], summary["partial_hits"]) == (9, 9)
    assert summary["hit_rate"] == pytest.approx(9 / 27)
    records = payload["records"]
    assert [r["keystroke"] for r in records if r["hit"]] == list(range(3, 28, 3))
    assert records[2]["suggestion"] == BODY[3:]  # typed text and second line removed
    assert payload["comparison"] is None


async def test_priming_asks_once_at_the_cursor_before_typing_and_is_not_timed(
        fake_server: Path, source_file: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    command = _server_command(fake_server, "--log", str(log))
    payload = await run_benchmark(_config(source_file, command, prime=True,
                                          keystrokes_per_site=4))
    assert len(payload["records"]) == 4
    site = [m for m in _log(log) if m.get("method") in (
        "textDocument/didChange", "textDocument/inlineCompletion")
        and source_file.name in json.dumps(m)]
    first_change = next(i for i, m in enumerate(site) if m["method"] == "textDocument/didChange")
    assert first_change == 1  # one request, then the typing
    inserted = site[1]["params"]["contentChanges"][0]["range"]["start"]
    assert site[0]["params"]["position"] == inserted


async def test_naive_baseline_runs_with_its_flags_and_is_compared(
        fake_server: Path, source_file: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    command = _server_command(fake_server, "--delay-ms", "1", "--naive-delay-ms", "40",
                              "--log", str(log))
    config = _config(source_file, command, baseline="naive", keystrokes_per_site=10)
    payload = await run_benchmark(config)
    argv = [entry["argv"] for entry in _log(log) if "argv" in entry]
    assert argv[0] == list(command[2:])
    assert argv[1] == [*command[2:], *naive_flags(), "--time-budget-ms", "600000"]
    assert naive_flags() == ["--no-reuse-kv-prefix", "--no-speculative-cache",
                             "--no-progressive"]
    assert payload["comparison"]["speed_up"]["p50"] > 3
    assert payload["variants"]["naive"]["summary"]["hits"] == 3


async def test_the_same_baseline_adds_its_flags_and_both_get_the_workspace(
        fake_server: Path, source_file: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    command = _server_command(fake_server, "--delay-ms", "1", "--log", str(log))
    config = _config(source_file, command, baseline="same", keystrokes_per_site=4,
                     baseline_args=("--context-sources=none",),
                     workspace=str(source_file.parent))
    payload = await run_benchmark(config)
    entries = _log(log)
    argv = [entry["argv"] for entry in entries if "argv" in entry]
    assert argv == [list(command[2:]), [*command[2:], "--context-sources=none"]]
    folders = [entry["params"]["workspaceFolders"] for entry in entries
               if entry.get("method") == "initialize"]
    assert folders == [[{"uri": source_file.parent.as_uri(),
                         "name": source_file.parent.name}]] * 2
    assert set(payload["variants"]) == {"flashls", "same"}
    assert payload["comparison"] is not None


async def test_the_same_baseline_can_be_another_command(
        fake_server: Path, source_file: Path, tmp_path: Path) -> None:
    """`--baseline-command`: an older checkout's server against this one, in one run."""
    log = tmp_path / "server.log"
    command = _server_command(fake_server, "--delay-ms", "1", "--log", str(log))
    older = _server_command(fake_server, "--delay-ms", "2", "--log", str(log))
    config = _config(source_file, command, baseline="same", keystrokes_per_site=3,
                     baseline_command=older, baseline_args=("--context-sources=none",))
    payload = await run_benchmark(config)
    argv = [entry["argv"] for entry in _log(log) if "argv" in entry]
    assert argv == [list(command[2:]), [*older[2:], "--context-sources=none"]]
    assert set(payload["variants"]) == {"flashls", "same"}


async def test_client_answers_server_requests_and_shuts_down(
        fake_server: Path, source_file: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    command = _server_command(fake_server, "--log", str(log))
    await run_benchmark(_config(source_file, command, keystrokes_per_site=2))
    messages = _log(log)
    assert {"jsonrpc": "2.0", "id": "cfg-1", "result": [{}]} in messages
    methods = [m.get("method") for m in messages]
    assert methods[-2:] == ["shutdown", "exit"]
    assert methods.count("textDocument/didChange") == 2


async def test_a_request_that_never_returns_times_out_and_the_run_goes_on(
        fake_server: Path, source_file: Path) -> None:
    command = _server_command(fake_server, "--hang-at", "3")  # 1 is the warm-up
    payload = await run_benchmark(_config(source_file, command, keystrokes_per_site=5,
                                          request_timeout_s=0.5))
    outcomes = [r["outcome"] for r in payload["records"]]
    assert outcomes == ["answered", "timeout", "answered", "answered", "answered"]


def test_a_crashing_server_gives_an_error_with_its_stderr(
        fake_server: Path, source_file: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    command = shlex.join(_server_command(fake_server, "--crash-at", "4"))
    code = main(["bench", "latency", "--files", str(source_file), "--sites", "1",
                 "--baseline", "none", "--server-command", command, "--out", str(tmp_path)])
    assert code == 1
    assert "fake server crashing on purpose" in capsys.readouterr().err
    assert not list(tmp_path.glob("latency-*.json"))


def test_command_prints_the_table_and_writes_json_and_png(
        fake_server: Path, source_file: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    command = shlex.join(_server_command(fake_server, "--delay-ms", "1",
                                         "--naive-delay-ms", "10"))
    code = main(["bench", "latency", "--files", str(source_file), "--sites", "1",
                 "--keystrokes-per-site", "6", "--server-command", command,
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "p50 speed-up x" in printed and "hit rate" in printed
    assert "cache-hit rate" in printed and "RSS growth MB" in printed
    [json_file] = out.glob("latency-*.json")
    payload = json.loads(json_file.read_text())
    assert set(payload["variants"]) == {"flashls", "naive"}
    assert len(payload["records"]) == 12
    assert payload["sites"] == [{"path": str(source_file), "line": 3, "text": BODY,
                                 "keystrokes": 6}]
    png = json_file.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


async def test_human_mode_cancels_superseded_requests_and_counts_stale_ones(
        fake_server: Path, source_file: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    command = _server_command(fake_server, "--delay-ms", "100", "--log", str(log))
    config = _config(source_file, command, mode="human", interval_ms=30.0,
                     keystrokes_per_site=8)
    payload = await run_benchmark(config)
    summary = payload["variants"]["flashls"]["summary"]
    assert any(m.get("method") == "$/cancelRequest" for m in _log(log))
    assert summary["late"] >= 5 and summary["stale_shown"] >= 5
    assert payload["records"][-1]["outcome"] == "answered"  # nothing supersedes the last
    assert all(r["latency_ms"] is None for r in payload["records"] if r["outcome"] == "late")


async def test_human_mode_with_a_fast_server_shows_nothing_stale(
        fake_server: Path, source_file: Path) -> None:
    config = _config(source_file, _server_command(fake_server, "--status"), mode="human",
                     interval_ms=150.0, keystrokes_per_site=6)
    payload = await run_benchmark(config)
    summary = payload["variants"]["flashls"]["summary"]
    assert (summary["answered"], summary["late"], summary["stale_shown"]) == (6, 0, 0)
    assert summary["hits"] == 2  # after 3 and 6 characters
    assert summary["fresh_shown"] == 6  # every keystroke saw its own suggestion in time
    assert summary["cache_hit_rate"] == pytest.approx(2 / 6)
    for record in payload["records"]:  # timed from the keystroke, so a little over the reply
        assert 0 < record["response_ms"] <= record["latency_ms"] < 150


@pytest.mark.skipif(importlib.util.find_spec("flashls.server") is None,
                    reason="flashls/server.py is not written yet")
def test_benchmark_drives_the_real_server_with_the_fake_engine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "latency", "--sites", "2", "--keystrokes-per-site", "5",
                 "--server-arg=--engine", "--server-arg=fake", "--baseline", "naive",
                 "--out", str(tmp_path), "--startup-timeout-s", "60"])
    assert code == 0, capsys.readouterr().err
    [json_file] = tmp_path.glob("latency-*.json")
    payload = json.loads(json_file.read_text())
    for name in ("flashls", "naive"):
        summary = payload["variants"][name]["summary"]
        assert summary["requests"] == 10
        assert summary["answered"] == 10
        assert summary["latency_ms"]["p50"] > 0
        assert summary["with_status"] == 10  # every answer paired with its flashls/status
        assert summary["model_answers"] + summary["cache_hits"] == 10
        assert summary["breakdown_p50_ms"]["generate"] > 0
        assert 0 < summary["overhead_share_p50"] < 1
        assert payload["variants"][name]["rss_mb"]["growth"] is not None
    assert payload["variants"]["naive"]["server_command"][-5:] == [
        *naive_flags(), "--time-budget-ms", "600000"]
    assert payload["variants"]["naive"]["summary"]["cache_hits"] == 0


@pytest.mark.model
def test_benchmark_on_the_real_model_gets_suggestions_for_every_keystroke(
        model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Token counts come with finished generations; partial answers (on by default) have
    # none, so they are off here.
    code = main(["bench", "latency", "--sites", "2", "--keystrokes-per-site", "8",
                 "--request-timeout-s", "120",
                 f"--server-arg=--model={model_path}", "--server-arg=--n-threads=2",
                 "--server-arg=--partial-answer-ms=0", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    [json_file] = tmp_path.glob("latency-*.json")
    payload = json.loads(json_file.read_text())
    for name in ("flashls", "naive"):
        summary = payload["variants"][name]["summary"]
        assert summary["answered"] == summary["requests"] == 16
        assert summary["suggestions"] > 0
        assert summary["with_status"] == 16
        assert summary["model_answers"] > 0 and summary["evaluated_tokens"]["p50"] > 0
    assert payload["comparison"]["speed_up"]["p50"] is not None


async def test_status_notifications_are_paired_with_their_requests(
        fake_server: Path, source_file: Path) -> None:
    command = _server_command(fake_server, "--status")
    payload = await run_benchmark(_config(source_file, command, keystrokes_per_site=10))
    summary = payload["variants"]["flashls"]["summary"]
    records = payload["records"]
    # Cache answers after 3, 6 and 9 characters; model answers evaluate 100 tokens on the
    # first keystroke, then as many tokens as characters typed: 2, 4, 5, 7, 8, 10.
    assert [r["source"] for r in records] == ["model", "model", "cache"] * 3 + ["model"]
    assert (summary["with_status"], summary["cache_hits"], summary["model_answers"]) == (10, 3, 7)
    assert summary["cache_hit_rate"] == pytest.approx(0.3)
    assert summary["evaluated_tokens"] == {"p50": 7, "p90": pytest.approx(46)}
    assert summary["evaluated_tokens_warm"] == {"p50": 6, "p90": 9}
    assert summary["breakdown_p50_ms"] == {
        "queue": 2.0, "context": 1.0, "tokenize": 3.0, "prompt": 4.0, "generate": 5.0,
        "postprocess": 6.0, "jsonrpc": pytest.approx(percentile(
            [r["jsonrpc_ms"] for r in records if r["source"] == "model"], 50))}
    for record in records:
        total = 1.5 if record["source"] == "cache" else 21.0
        assert record["timings"]["total_ms"] == total
        assert record["jsonrpc_ms"] == pytest.approx(record["response_ms"] - total)
        assert record["response_ms"] == pytest.approx(record["latency_ms"])
    assert [r["generated_tokens"] for r in records if r["source"] == "model"] == [7] * 7
    shares = [(1 + 6 + 3 + r["jsonrpc_ms"]) / r["response_ms"]
              for r in records if r["source"] == "model"]
    assert summary["overhead_share_p50"] == pytest.approx(percentile(shares, 50))


def _model_record(response_ms: float, total_ms: float, keystroke: int = 2) -> RequestRecord:
    timings = {"context_ms": 2.0, "queue_ms": 10.0, "tokenize_ms": 1.0, "prompt_ms": 30.0,
               "generate_ms": 40.0, "postprocess_ms": 3.0, "total_ms": total_ms,
               "evaluated_tokens": 12, "generated_tokens": 5}
    return RequestRecord(
        variant="flashls", site=0, path="x.py", line=0, keystroke=keystroke, version=2,
        outcome="answered", latency_ms=response_ms, suggestion="", rest="abc", hit=False,
        partial_hit=False, stale_shown=False,
        **server_fields({"source": "model", "timings": timings}, response_ms))


def test_overhead_share_is_the_code_around_the_model_over_client_latency() -> None:
    # 100 ms waited, 90 of them in the server: 10 ms of JSON-RPC, and context 2 + tokenize 1
    # + postprocess 3 inside the server; queueing (10) and the model (70) are not overhead.
    record = _model_record(response_ms=100.0, total_ms=90.0)
    assert record.jsonrpc_ms == pytest.approx(10.0)
    assert (record.evaluated_tokens, record.generated_tokens) == (12, 5)
    assert overhead_share(record) == pytest.approx(16 / 100)
    records = [record, _model_record(50.0, 45.0), _model_record(200.0, 150.0)]
    summary = summarize(records)  # shares 16/100, (6 + 5)/50 and (6 + 50)/200
    assert summary["overhead_share_p50"] == pytest.approx(11 / 50)
    assert summary["breakdown_p50_ms"]["jsonrpc"] == pytest.approx(10.0)  # of 10, 5 and 50
    cache = dataclasses.replace(record, source="cache", timings={"total_ms": 1.0})
    assert overhead_share(cache) is None
    assert summarize([*records, cache])["cache_hit_rate"] == pytest.approx(1 / 4)


def test_continuations_are_counted_against_cut_answers() -> None:
    cut = dataclasses.replace(_model_record(100.0, 90.0), finish="deadline")
    whole = dataclasses.replace(_model_record(100.0, 90.0), finish="stop")
    continued = dataclasses.replace(cut, source="cache", finish="continued",
                                    timings={"total_ms": 1.0})
    joined = dataclasses.replace(continued, finish="joined")
    summary = summarize([cut, cut, whole, continued, joined])
    assert (summary["cut_by_budget"], summary["continued_hits"]) == (2, 2)
    assert summary["joined_hits"] == 1
    assert summary["continued_per_cut"] == pytest.approx(1.0)


async def test_rss_is_sampled_after_warm_up_and_at_the_end_of_every_repetition(
        fake_server: Path, source_file: Path) -> None:
    config = _config(source_file, _server_command(fake_server), keystrokes_per_site=4,
                     repeat=3)
    payload = await run_benchmark(config)
    rss = payload["variants"]["flashls"]["rss_mb"]
    assert rss["samples"] == 1 + 3 + 1  # after warm-up, after each pass, at the end
    assert 1 < rss["after_warmup"] <= rss["peak"] < 1000
    assert rss["growth"] == pytest.approx(rss["end"] - rss["after_warmup"])
    assert rss["within_limit"] is (rss["growth"] < 50)
    assert [r["repetition"] for r in payload["records"]] == [0] * 4 + [1] * 4 + [2] * 4
    assert payload["variants"]["flashls"]["summary"]["requests"] == 12


def test_every_inline_item_is_read_as_the_editor_shows_it() -> None:
    here = {"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 4}}
    word = {"start": {"line": 3, "character": 2}, "end": {"line": 3, "character": 4}}
    result = {"items": [{"insertText": "first()", "range": here},
                        "not an item", {"insertText": {"value": "snippet"}},
                        {"insertText": "abother()", "range": word}, {"insertText": 7}]}
    assert shown_texts(result, "  ab", 3) == ["first()", "snippet", "other()"]
    assert shown_text(result, "  ab", 3) == "first()"
    assert shown_texts([], "", 0) == [] and shown_text(None, "", 0) == ""
