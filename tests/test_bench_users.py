"""Tests of `flashls bench users`: the options, what a round's records add up to, the
server's throughput from two /metrics readings, the wait for idle slots, and one run of
two users against a real llama-server that the bench starts and stops itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from flashls.bench.harness import BenchError, write_report
from flashls.bench.replay import RequestRecord
from flashls.bench.users import (
    UsersConfig,
    add_arguments,
    config_from_arguments,
    format_table,
    lost,
    parse_metrics,
    parse_user_counts,
    round_summary,
    server_throughput,
    shared_server_command,
    user_seeds,
    wait_for_idle,
    write_plot,
)
from flashls.cli import main

BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_llama_server.sh"
METRICS_BEFORE = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 100
llamacpp:tokens_predicted_total 40
llamacpp:n_decode_total 30
llamacpp:requests_processing 2
"""
METRICS_AT_END = "llamacpp:prompt_tokens_total 400\nllamacpp:tokens_predicted_total 70\n"
METRICS_AFTER = """\
llamacpp:prompt_tokens_total 500
llamacpp:tokens_predicted_total 80
llamacpp:n_decode_total 90
llamacpp:requests_processing 0
"""
# A small module, so that the real run's prompts are short and quick on 2 busy cores.
SOURCE = '''\
import math


def circle_area(radius):
    """The area of a circle."""
    return math.pi * radius * radius


def rectangle_area(width, height):
    """The area of a rectangle."""
    return width * height


def describe_shape(name, area):
    message = f"{name} has an area of {area:.2f}"
    return message.upper()


print(describe_shape("circle", circle_area(2.0)))
'''


def parse(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(options))


def record(user: int, keystroke: int, outcome: str, latency_ms: float | None = None,
           generated_tokens: int | None = None) -> RequestRecord:
    answered = outcome in ("answered", "late")
    return RequestRecord(
        variant=f"user{user}", site=0, path="/tmp/a.py", line=3, keystroke=keystroke,
        version=keystroke + 1, outcome=outcome, latency_ms=latency_ms,
        suggestion="x" if answered else None, rest="xy", hit=False, partial_hit=answered,
        stale_shown=outcome == "late", generated_tokens=generated_tokens)


def test_the_users_list_takes_positive_integers_separated_by_commas() -> None:
    assert parse_user_counts("1,4,8") == (1, 4, 8)
    assert parse_user_counts(" 2 , 3,") == (2, 3)
    for wrong in ("", "0", "1,-2", "four", "1.5"):
        with pytest.raises(BenchError):
            parse_user_counts(wrong)


def test_options_become_the_config() -> None:
    config = config_from_arguments(parse(
        "--users", "1,2", "--server", "llama-server,llama-cpp-python", "--sites", "3",
        "--interval-ms", "100", "--server-arg=--time-budget-ms=800"))
    assert config.users == (1, 2)
    assert config.servers == ("llama-server", "llama-cpp-python")
    assert (config.sites, config.interval_ms) == (3, 100.0)
    assert config.server_args == ("--time-budget-ms=800",)
    running = config_from_arguments(parse("--endpoint", "http://127.0.0.1:9/",
                                          "--engine", "openai"))
    assert running.servers == ("openai",) and running.endpoint == "http://127.0.0.1:9/"
    for wrong in (("--server", "vllm"), ("--users", "0"), ("--parallel", "0"),
                  ("--interval-ms", "0")):
        with pytest.raises(BenchError):
            config_from_arguments(parse(*wrong))


def test_the_shared_servers_are_started_with_slots_counters_and_a_context_per_slot() -> None:
    config = UsersConfig(llama_server_binary="/opt/llama-server", parallel=4,
                         ctx_per_slot=2048, server_threads=2)
    command = shared_server_command(config, "llama-server", "/m.gguf", 8012)
    assert command[0] == "/opt/llama-server"
    joined = " ".join(command)
    assert "-np 4" in joined and "-c 8192" in joined and "-t 2" in joined
    assert "--metrics" in command and "--slots" in command and "--port 8012" in joined
    other = shared_server_command(config, "llama-cpp-python", "/m.gguf", 8013)
    assert other[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert "--n_ctx 2048" in " ".join(other)


def test_llama_server_args_are_passed_to_the_started_llama_server() -> None:
    arguments = parse("--llama-server-arg=-ub", "--llama-server-arg=64",
                      "--llama-server-arg=--cache-reuse", "--llama-server-arg=256")
    config = config_from_arguments(arguments)
    command = shared_server_command(config, "llama-server", "/m.gguf", 8012)
    assert command[-4:] == ["-ub", "64", "--cache-reuse", "256"]


def test_no_user_retypes_a_line_of_an_earlier_round() -> None:
    config = UsersConfig(users=(1, 4, 4), seed=10)
    seeds = [user_seeds(config, index) for index in range(3)]
    assert [len(one) for one in seeds] == [1, 4, 4]
    every = [seed for one in seeds for seed in one]
    assert len(set(every)) == len(every) and min(every) == 10


def test_a_round_counts_every_request_and_only_unclosed_ones_as_lost() -> None:
    first = [record(0, 1, "cancelled"), record(0, 2, "answered", 100.0, 5),
             record(0, 3, "late", None, 7)]
    second = [record(1, 1, "error"), record(1, 2, "timeout"), record(1, 3, "answered", 300.0, 4)]
    assert lost(first) == 0 and lost(second) == 1
    counters = server_throughput(parse_metrics(METRICS_BEFORE), parse_metrics(METRICS_AT_END),
                                 parse_metrics(METRICS_AFTER), 10.0)
    idle = {"server_idle_after": True, "idle_wait_ms": 5.0, "busy_slots_at_end": 1}
    summary = round_summary("llama-server", 2, 6, [first, second], 2.0, counters, idle)
    pooled = summary["pooled"]
    assert (pooled["requests"], summary["keystrokes"], pooled["lost"]) == (6, 6, 1)
    closed = sum(pooled[name] for name in ("answered", "late", "cancelled", "error"))
    assert closed + pooled["lost"] == pooled["requests"]
    assert pooled["latency_ms"]["p50"] == pytest.approx(200.0)
    assert [(one["user"], one["lost"], one["p50_ms"]) for one in summary["per_user"]] == [
        (0, 0, 100.0), (1, 1, 300.0)]
    assert summary["tokens"] == {"server_predicted": 40.0, "clients_received": 16,
                                 "not_received": 24.0}
    assert summary["server_idle_after"] is True and len(summary["records"]) == 6
    assert round_summary("openai", 2, 6, [first, second], 2.0, None, idle)["tokens"] is None


def test_the_table_and_plot_show_every_round_even_one_without_answers(
        tmp_path: Path) -> None:
    idle = {"server_idle_after": False, "idle_wait_ms": 10000.0, "busy_slots_at_end": 1}
    counters = server_throughput(parse_metrics(METRICS_BEFORE), parse_metrics(METRICS_AT_END),
                                 parse_metrics(METRICS_AFTER), 10.0)
    rounds = [round_summary("llama-server", 1, 2, [[record(0, 1, "cancelled"),
                                                    record(0, 2, "answered", 90.0, 3)]],
                            1.0, counters, idle),
              round_summary("openai", 2, 2, [[record(0, 1, "cancelled")],
                                             [record(1, 1, "timeout")]], 1.0, None, idle)]
    payload = {"rounds": rounds}
    table = format_table(payload)
    assert "NO 10000ms" in table  # slots still busy: shown, not hidden
    assert "predicted 40 tokens (10 after the typing ended); the answers held 3" in table
    json_path, plot_path = write_report(tmp_path, "users", payload, write_plot)
    assert json.loads(json_path.read_text())["rounds"][1]["pooled"]["lost"] == 1
    assert plot_path.read_bytes().startswith(b"\x89PNG")


def test_throughput_is_the_counters_growth_over_the_window() -> None:
    before, after = parse_metrics(METRICS_BEFORE), parse_metrics(METRICS_AFTER)
    assert before["prompt_tokens_total"] == 100.0 and "HELP" not in str(before)
    throughput = server_throughput(before, parse_metrics(METRICS_AT_END), after, 4.0)
    assert throughput["grown"] == {"prompt_tokens_total": 400.0,
                                   "tokens_predicted_total": 40.0, "n_decode_total": 60.0}
    assert throughput["prompt_tokens_per_s"] == 100.0
    assert throughput["tokens_predicted_per_s"] == 10.0
    # n_decode_total is missing at the end of the typing: left out, not made up.
    assert throughput["grown_after_typing"] == {"prompt_tokens_total": 100.0,
                                                "tokens_predicted_total": 10.0}
    assert throughput["gauges_after"] == {"requests_processing": 0.0}
    assert parse_metrics("<html>not found</html>") == {}


def slots_server(answers: list[Any]) -> httpx.AsyncClient:
    """A stand-in server whose /slots gives `answers` in turn (the last one ever after);
    an int is an HTTP status."""
    def handle(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, int):
            return httpx.Response(answer)
        return httpx.Response(200, json=[{"id": index, "is_processing": busy}
                                         for index, busy in enumerate(answer)])
    return httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://x")


async def test_idle_slots_are_waited_for_within_the_timeout() -> None:
    async with slots_server([[True, True], [True, False], [False, False]]) as http:
        idle = await wait_for_idle(http, 5.0)
    assert idle["server_idle_after"] is True and idle["busy_slots_at_end"] == 2
    async with slots_server([[True, False]]) as http:
        stuck = await wait_for_idle(http, 0.2)
    assert stuck["server_idle_after"] is False and stuck["idle_wait_ms"] >= 200
    async with slots_server([404]) as http:  # llama_cpp.server, or no --slots
        unknown = await wait_for_idle(http, 5.0)
    assert unknown["server_idle_after"] is None and unknown["busy_slots_at_end"] is None


@pytest.fixture(scope="module")
def llama_server_binary() -> Path:
    """The cached build; a failure (not a skip) when scripts/install.sh could not build it."""
    path = Path(subprocess.run(["bash", str(BUILD_SCRIPT), "--print-path"], check=True,
                               capture_output=True, text=True).stdout.strip())
    if not path.is_file():
        pytest.fail(f"llama-server is not built at {path}: run `{BUILD_SCRIPT}`")
    return path


@pytest.mark.model
def test_two_users_type_at_once_against_a_real_llama_server(
        llama_server_binary: Path, model_path: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "shapes.py"
    source.write_text(SOURCE)
    out = tmp_path / "reports"
    code = main(["bench", "users", "--users", "2", "--sites", "1",
                 "--keystrokes-per-site", "4", "--files", str(source),
                 "--llama-server-binary", str(llama_server_binary), "--model", str(model_path),
                 "--idle-timeout-s", "30", "--out", str(out)])
    assert code == 0
    assert "predicted tok/s" in capsys.readouterr().out
    [json_file] = out.glob("users-*.json")
    assert json_file.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    payload = json.loads(json_file.read_text())
    [summary] = payload["rounds"]
    pooled = summary["pooled"]
    assert summary["keystrokes"] == pooled["requests"] == 8
    assert pooled["lost"] == 0
    closed = sum(pooled[name] for name in ("answered", "late", "cancelled", "error"))
    assert closed == pooled["requests"]
    assert [one["requests"] for one in summary["per_user"]] == [4, 4]
    assert summary["server_idle_after"] is True, summary
    counters = summary["server_counters"]
    assert counters["prompt_tokens_per_s"] > 0, counters
    # The bench stopped the server it started.
    with pytest.raises(httpx.HTTPError):
        httpx.get(payload["servers"][0]["endpoint"] + "/health", timeout=2)
