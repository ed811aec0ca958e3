"""Tests of `flashls bench wait`: the single-line rows, the scoring of each view, the counts,
a run against `flashls serve --engine fake` (cut and not cut), and one run on the real model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flashls.bench.infill import PACKAGED_DATA_DIR, read_rows
from flashls.bench.waiting import (
    Answer,
    FimAnswer,
    Place,
    is_single_line,
    judge,
    make_hole,
    pick_holes,
    score_place,
    served_settings,
    server_line,
    summarize,
    task_of,
)
from flashls.cli import main
from flashls.engine.fake import fake_middle

ROW: dict[str, Any] = {
    "task_id": "Toy/0/L1_L1", "entry_point": "add",
    "prompt": "def add(left, right):\n    total = 0\n",
    "canonical_solution": "    total = left + right\n",
    "suffix": "    return total\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
}
FAKE = ["--server-arg=--engine", "--server-arg=fake"]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return read_rows(str(PACKAGED_DATA_DIR), "multiline")


def test_single_line_rows_are_one_per_task_seeded_and_open_with_the_line_emptied(
        rows: list[dict[str, Any]]) -> None:
    holes = pick_holes(rows, 12, seed=0)
    assert len(holes) == 12
    assert len({task_of(hole.row) for hole in holes}) == 12
    assert [h.task_id for h in holes] == [h.task_id for h in pick_holes(rows, 12, seed=0)]
    assert [h.task_id for h in holes] != [h.task_id for h in pick_holes(rows, 12, seed=1)]
    for hole in holes:
        first, last = hole.task_id.rsplit("/", 1)[1].split("_")
        assert is_single_line(hole.row) and first == last  # HumanEval's L<n>_L<n> rows
        lines = hole.text.split("\n")
        assert lines[hole.cursor.line] == hole.indent
        assert hole.cursor.character == len(hole.indent)
        lines[hole.cursor.line] = hole.canonical
        assert "\n".join(lines) == (hole.row["prompt"] + hole.row["canonical_solution"]
                                    + hole.row["suffix"])
    # 164 HumanEval tasks: never more rows than that, and never two of one task.
    assert len(pick_holes(rows, 10_000, seed=0)) == 164


def test_multi_line_middles_are_not_single_line_rows() -> None:
    assert is_single_line(ROW)
    assert not is_single_line({**ROW, "canonical_solution": "    a = 1\n    b = 2\n"})
    assert not is_single_line({**ROW, "canonical_solution": "   \n"})


def test_a_server_line_keeps_the_typed_indentation_and_only_the_first_line() -> None:
    hole = make_hole(ROW)
    assert hole.indent == "    "
    assert server_line(hole, "total = left + right\n    return total") == \
        "    total = left + right"
    assert server_line(hole, "") is None
    assert server_line(hole, "  \nreturn 1") is None


def test_judge_runs_the_tests_and_compares_stripped_lines() -> None:
    hole = make_hole(ROW)
    verdicts: dict[str, bool] = {}
    right = judge(hole, "    total = left + right   ", verdicts)
    assert right.exact and right.passed
    same_effect = judge(hole, "    total = right + left", verdicts)
    assert same_effect.passed and not same_effect.exact
    wrong = judge(hole, "    total = left - right", verdicts)
    assert not wrong.passed and not wrong.exact
    nothing = judge(hole, None, verdicts)
    assert nothing.line is None and not nothing.passed and not nothing.exact
    assert len(verdicts) == 3  # nothing shown runs no test


def _place(first: Answer, second: Answer | None = None, cut: bool = False,
           finished_ms: float | None = None) -> Place:
    final = first.response_ms if not cut else (None if second is None else 2000.0)
    return Place("Toy/0/L1_L1", "file:///toy.py", 2, "    total = left + right", first, cut,
                 finished_ms=finished_ms, second=second, final_ms=final,
                 notifications=int(finished_ms is not None),
                 fim=FimAnswer("    total = left + right", "stop", 900.0, 30, 6))


def test_views_what_was_on_screen_and_what_the_waiting_user_ends_with() -> None:
    hole = make_hole(ROW)
    late_cut = _place(Answer("answered", "total =", 1600.0, "model", "deadline"),
                      Answer("answered", "total = left + right", 3.0, "cache", "continued"),
                      cut=True, finished_ms=1900.0)
    score_place(late_cut, hole, screen_ms=1500.0)
    assert late_cut.verdicts["screen"].line is None  # came after 1.5 s: nothing on screen
    assert late_cut.verdicts["first"].line == "    total ="
    assert late_cut.verdicts["waited"].exact and late_cut.verdicts["waited"].passed
    assert late_cut.verdicts["fim"].passed
    never_finished = _place(Answer("answered", "total = left", 1400.0, "model", "deadline"),
                            cut=True)
    score_place(never_finished, hole, screen_ms=1500.0)
    assert never_finished.verdicts["screen"].line == "    total = left"
    assert never_finished.verdicts["waited"].line == "    total = left"  # still on screen
    whole = _place(Answer("answered", "total = left + right", 900.0, "model", "stop"))
    score_place(whole, hole, screen_ms=1500.0)
    assert all(whole.verdicts[view].exact for view in ("screen", "first", "waited"))

    summary = summarize([late_cut, never_finished, whole], screen_ms=1500.0)
    assert (summary["rows"], summary["cut"], summary["finished"], summary["unfinished"]) == \
        (3, 2, 1, 1)
    assert summary["first_after_screen"] == 1
    assert summary["views"]["screen"]["shown"] == 2
    assert summary["views"]["waited"]["pass_at_1"] == pytest.approx(2 / 3)
    assert summary["latency_ms"]["final"]["count"] == 2  # the unfinished row has no final
    assert summary["latency_ms"]["finished"]["count"] == 1
    assert summary["second_answers"] == {"cache/continued": 1}


def test_the_plain_call_takes_the_servers_engine_model_and_threads() -> None:
    kind, config = served_settings(["--engine", "fake", "--model=some.gguf",
                                    "--n-threads", "3", "--time-budget-ms=100", "--tcp=x"])
    assert (kind, config.model, config.n_threads, config.time_budget_ms) == \
        ("fake", "some.gguf", 3, 100)
    assert served_settings([])[0] == "llama"


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    out = tmp_path / "out"
    code = main(["bench", "wait", "--limit", "3", *extra, "--out-dir", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "after waiting" in printed.out and "plain FIM" in printed.out
    [json_path] = out.glob("wait-*.json")
    assert json_path.with_suffix(".png").stat().st_size > 0
    payload: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    return payload


def test_a_cut_answer_is_finished_announced_and_asked_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 ms a fake token and a 100 ms budget: every first answer is cut after 2-3 tokens.
    monkeypatch.setenv("FLASHLS_FAKE_TOKEN_MS", "40")
    payload = _run(tmp_path, capsys, *FAKE, "--server-arg=--time-budget-ms=100",
                   "--server-arg=--partial-answer-ms=0")  # cut answers, not partial ones
    holes = pick_holes(read_rows(str(PACKAGED_DATA_DIR), "multiline"), 3, seed=0)
    summary = payload["summary"]
    assert (summary["rows"], summary["cut"], summary["finished"], summary["unfinished"]) == \
        (3, 3, 3, 0)
    for row in payload["rows"]:
        assert row["first"]["finish"] == "deadline" and row["notifications"] == 1
        assert row["second"]["source"] == "cache" and row["second"]["finish"] == "continued"
        assert row["finished_ms"] <= row["final_ms"]
        # The fake's whole line; the cut one was a piece of it.
        indent = row["canonical"][:len(row["canonical"]) - len(row["canonical"].lstrip())]
        assert row["verdicts"]["waited"]["line"] == indent + "fake_completion(1)"
        assert (indent + "fake_completion(1)").startswith(row["verdicts"]["first"]["line"])
        prompt = next(hole.row["prompt"] for hole in holes if hole.task_id == row["task_id"])
        assert row["verdicts"]["fim"]["line"] == fake_middle(prompt).split("\n")[0]
    assert summary["views"]["waited"]["pass_at_1"] == 0.0


def test_partial_answers_are_asked_again_until_the_suggestion_is_whole(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With partial answers (the default) the first answer shows the first words, and the
    editor is told twice: when words come for a request shown nothing, and at the end. The
    waiting user ends with the whole line, as the editor asks again each time."""
    monkeypatch.setenv("FLASHLS_FAKE_TOKEN_MS", "150")
    payload = _run(tmp_path, capsys, *FAKE, "--server-arg=--time-budget-ms=200")
    for row in payload["rows"]:
        assert row["first"]["finish"] in ("partial", "deadline") and row["notifications"] >= 1
        indent = row["canonical"][:len(row["canonical"]) - len(row["canonical"].lstrip())]
        assert row["verdicts"]["waited"]["line"] == indent + "fake_completion(1)"
    assert payload["summary"]["cut"] == 3


def test_an_answer_within_budget_is_what_the_user_keeps(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHLS_FAKE_TOKEN_MS", "1")
    payload = _run(tmp_path, capsys, *FAKE, "--server-arg=--time-budget-ms=10000")
    summary = payload["summary"]
    assert (summary["cut"], summary["finished"], summary["finished_uncut"]) == (0, 0, 0)
    for row in payload["rows"]:
        assert row["second"] is None and row["final_ms"] == row["first"]["response_ms"]
        verdicts = row["verdicts"]
        assert verdicts["screen"] == verdicts["first"] == verdicts["waited"]


@pytest.mark.model
def test_a_short_run_on_the_real_model(model_path: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    payload = _run(tmp_path, capsys, f"--server-arg=--model={model_path}",
                   "--server-arg=--n-threads=2", "--limit", "2")
    summary = payload["summary"]
    assert summary["rows"] == len(payload["rows"]) == 2
    assert summary["cut"] == summary["finished"] + summary["unfinished"]
    assert sum(summary["first_outcomes"].values()) == 2
    assert summary["first_outcomes"].get("answered") == 2
    assert set(summary["views"]) == {"screen", "first", "waited", "fim"}
    for figures in summary["views"].values():
        assert figures["rows"] == 2
        assert 0 <= figures["passed"] <= figures["shown"] <= 2
        assert 0.0 <= figures["pass_at_1"] <= 1.0 and 0.0 <= figures["exact_match"] <= 1.0
    for row in payload["rows"]:
        assert row["fim"]["finish"] in ("stop", "eos", "length")
        assert "\n" not in row["fim"]["text"]
        if row["cut"] and row["finished_ms"] is not None:
            assert row["second"]["outcome"] == "answered"
        else:
            assert row["second"] is None
    assert payload["fim_model"] and payload["server_command"][-1] == "--n-threads=2"
