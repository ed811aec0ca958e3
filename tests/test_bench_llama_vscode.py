"""Tests of the `llama-vscode` baseline of `flashls bench latency` (flashls/bench/llama_vscode.py):
the /infill fields it sends and how its answers are scored, against a tiny fake llama-server."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flashls.bench import llama_vscode, trace
from flashls.cli import main
from tests.test_bench import BODY, FAKE_SERVER, SOURCE

INDENT = "    "


class FakeLlamaServer(ThreadingHTTPServer):
    """Answers /health, and /infill with a reply chosen by how much of BODY is typed:
    the exact rest of the line, a shorter prefix of it, or blanks, in turn."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay_s = delay_s
        self.bodies: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def infill(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        time.sleep(self.delay_s)
        typed = str(body.get("prompt", "")).lstrip()
        rest = BODY[len(typed):] if BODY.startswith(typed) else ""
        content = [rest + "\n    return total\n", rest[:2], "  \n"][len(typed) % 3]
        return {"content": content, "stop_type": "eos",
                "timings": {"prompt_n": 7, "prompt_ms": 3.5, "predicted_n": 4,
                            "predicted_ms": 2.0}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeLlamaServer

    def do_GET(self) -> None:
        self._reply({"status": "ok"} if self.path == "/health" else {}, 200)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        self._reply(self.server.infill(body) if self.path == "/infill" else {}, 200)

    def _reply(self, payload: dict[str, Any], status: int) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)  # fails when the client closed a cancelled request

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(delay_s: float) -> Iterator[FakeLlamaServer]:
    server = FakeLlamaServer(delay_s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def llama_server() -> Iterator[FakeLlamaServer]:
    yield from _serve(0.0)


@pytest.fixture
def slow_llama_server() -> Iterator[FakeLlamaServer]:
    yield from _serve(0.1)


@pytest.fixture
def source_trace(tmp_path: Path) -> trace.Trace:
    path = tmp_path / "example.py"
    path.write_text(SOURCE)
    [site] = trace.pick_sites([str(path)], 1, 0)
    return trace.build_trace(site, SOURCE, 9)


async def test_each_keystroke_sends_llama_vscodes_infill_fields(
        llama_server: FakeLlamaServer, source_trace: trace.Trace) -> None:
    run = await llama_vscode.run_baseline(llama_server.url, [source_trace], "sync", 0.08, 1,
                                          5.0, 5.0)
    assert len(run.records) == 9
    timed = llama_server.bodies[1:]  # after the warm-up request
    assert len(timed) == 9
    lines = SOURCE.splitlines()
    for typed, body in enumerate(timed, start=1):
        assert body == {
            "input_prefix": "\n".join(lines[:3]) + "\n",  # the lines above the cursor's
            "input_suffix": "\n" + lines[4] + "\n",  # "" after the cursor, then the lines below
            "input_extra": [], "prompt": INDENT + BODY[:typed], "n_predict": 128,
            "n_indent": 4, "top_k": 40, "top_p": 0.99, "stream": False,
            "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True,
            "t_max_prompt_ms": 500, "t_max_predict_ms": 1000}


async def test_its_answers_are_scored_like_the_servers(
        llama_server: FakeLlamaServer, source_trace: trace.Trace) -> None:
    run = await llama_vscode.run_baseline(llama_server.url, [source_trace], "sync", 0.08, 1,
                                          5.0, 5.0)
    by_typed = {record.keystroke: record for record in run.records}
    assert [typed for typed, r in by_typed.items() if r.hit] == [3, 6, 9]
    assert [typed for typed, r in by_typed.items() if r.partial_hit] == [1, 4, 7]
    assert by_typed[3].suggestion == BODY[3:]  # the first line only
    assert by_typed[2].suggestion == ""  # a blank reply shows nothing
    for record in run.records:
        assert record.variant == "llama-vscode" and record.outcome == "answered"
        assert record.latency_ms is not None and record.latency_ms > 0
        assert (record.evaluated_tokens, record.generated_tokens) == (7, 4)


def test_bench_latency_compares_flashls_with_the_llama_vscode_baseline(
        llama_server: FakeLlamaServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "example.py"
    source.write_text(SOURCE)
    script = tmp_path / "fake_lsp.py"
    script.write_text(FAKE_SERVER)
    code = main(["bench", "latency", "--files", str(source), "--sites", "1",
                 "--keystrokes-per-site", "6",
                 "--server-command", shlex.join([sys.executable, str(script)]),
                 "--baseline", "llama-vscode", "--llama-server", llama_server.url,
                 "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "llama-vscode" in printed and "p50 speed-up x" in printed
    [json_file] = (tmp_path / "out").glob("latency-*.json")
    payload = json.loads(json_file.read_text())
    baseline = payload["variants"]["llama-vscode"]["summary"]
    assert (baseline["requests"], baseline["hits"], baseline["partial_hits"]) == (6, 2, 2)
    assert payload["comparison"]["hit_rate_difference"] is not None


def test_the_llama_vscode_baseline_needs_a_server_url(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "latency", "--baseline", "llama-vscode", "--out", str(tmp_path)])
    assert code == 1
    assert "--llama-server" in capsys.readouterr().err


async def test_human_mode_closes_the_request_the_next_keystroke_makes_stale(
        slow_llama_server: FakeLlamaServer, source_trace: trace.Trace) -> None:
    run = await llama_vscode.run_baseline(slow_llama_server.url, [source_trace], "human",
                                          0.03, 1, 5.0, 5.0)
    outcomes = [record.outcome for record in run.records]
    assert outcomes == ["cancelled"] * 8 + ["answered"]  # nothing supersedes the last
    last = run.records[-1]
    assert last.latency_ms is not None and last.latency_ms >= 100
    assert last.hit  # 9 characters typed: the fake answers the rest of the line
