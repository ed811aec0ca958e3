"""Tests of `flashls bench session`: the plan, the editor profiles' schedules, what counts
as visible on hand-made timelines, and short sessions against `flashls serve --engine fake`
with both profiles.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path

import pytest

from flashls.bench.client import LspClient
from flashls.bench.latency import initialize_server
from flashls.bench.session_drive import SessionDriver, suggestion_text
from flashls.bench.session_editor import (
    DELETE,
    FOCUS,
    NEOVIM_DEBOUNCE_MS,
    REQUEST,
    TYPE,
    Timing,
    schedule,
)
from flashls.bench.session_metrics import (
    RequestLog,
    VisitLog,
    agrees,
    first_suggestion,
    keystroke_views,
    place_results,
    request_summary,
    shown_at,
    visibility_summary,
)
from flashls.bench.session_plan import (
    PlanError,
    build_plan,
    delete_change,
    load_files,
    type_change,
)
from flashls.bench.trace import Position, utf16_to_index
from flashls.cli import main

FAKE = ["--server-arg=--engine", "--server-arg=fake"]
ALPHA = """\


def walk_tree(root_directory):
    found_names = []
    for directory, _, names in os.walk(root_directory):
        found_names.extend(os.path.join(directory, name) for name in names)
    return sorted(found_names)
"""
BETA = """\
class Greeter:
    @property
    def greeting_text(self):
        return "hello there, 🐍 friend"

    def greet_someone(self, person_name):
        message = self.greeting_text + person_name
        return message.upper()
""".replace('friend"', 'friend"   ')  # trailing whitespace, which is not re-typed


def _files(tmp_path: Path) -> list[str]:
    paths = []
    for name, text in (("alpha.py", ALPHA), ("beta.py", BETA)):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


def _answer(typed: int, arrived: float, text: str, cancelled: float | None = None,
            outcome: str = "answered") -> RequestLog:
    return RequestLog(visit=0, typed=typed, sent_ms=arrived - 5, outcome=outcome,
                      arrived_ms=arrived, cancelled_ms=cancelled, suggestion=text)


# --- what is on screen -------------------------------------------------------------------

def test_a_suggestion_typed_along_stays_visible() -> None:
    removed = "join(a, b)"
    visit = VisitLog(0, False, removed, (100.0, 200.0, 300.0, 400.0), 500.0)
    answers = [_answer(0, 50.0, "join(a, b)")]  # asked after the deletion, before typing
    views = keystroke_views(visit, answers)
    assert [view.shown for view in views] == ["oin(a, b)", "in(a, b)", "n(a, b)", "(a, b)"]
    assert all(view.correct for view in views)


def test_a_disagreeing_keystroke_hides_the_suggestion() -> None:
    removed = "jump(x)"
    visit = VisitLog(0, False, removed, (100.0, 200.0, 300.0), 400.0)
    answers = [_answer(0, 50.0, "join(x)")]
    assert [view.shown for view in keystroke_views(visit, answers)] == ["oin(x)", None, None]


def test_a_late_answer_does_not_count_for_an_earlier_keystroke() -> None:
    removed = "abcdef"
    visit = VisitLog(0, False, removed, (100.0, 200.0, 300.0), 400.0)
    # Asked after keystroke 1, answered after keystroke 2, when it had been cancelled.
    late = _answer(1, 250.0, "bcdef", cancelled=200.0)
    assert [view.shown for view in keystroke_views(visit, [late])] == [None, None, None]
    # The same answer before its cancel shows at keystroke 1 and, typed along, at 2 and 3.
    in_time = _answer(1, 150.0, "bcdef")
    assert [view.shown for view in keystroke_views(visit, [in_time])] == ["bcdef", "cdef",
                                                                          "def"]
    # Arriving after keystroke 2 without a cancel, it counts from keystroke 2 on only.
    slow = _answer(1, 250.0, "bcdef")
    assert [view.shown for view in keystroke_views(visit, [slow])] == [None, "cdef", "def"]


def test_the_newest_answer_wins_even_when_empty() -> None:
    removed = "abcdef"
    visit = VisitLog(0, False, removed, (100.0, 200.0), 300.0)
    answers = [_answer(0, 50.0, "abcdef"), _answer(1, 150.0, "")]
    assert [view.shown for view in keystroke_views(visit, answers)] == [None, None]
    assert shown_at(answers, removed, 1, 120.0) == "bcdef"


def test_typing_the_whole_suggestion_leaves_nothing_to_show() -> None:
    visit = VisitLog(0, False, "ab", (100.0, 200.0), 300.0)
    views = keystroke_views(visit, [_answer(0, 50.0, "ab")])
    assert [view.shown for view in views] == ["b", None]


def test_answers_asked_before_the_deletion_never_show() -> None:
    visit = VisitLog(0, False, "abc", (100.0,), 200.0)
    assert keystroke_views(visit, [_answer(-1, 50.0, "abc")])[0].shown is None


def test_correctness_compares_the_first_line_with_the_rest_of_the_line() -> None:
    assert agrees("rest(a)", "rest(a)")
    assert agrees("rest", "rest(a)")  # shorter, on the way
    assert agrees("rest(a))\n    more", "rest(a)")  # completes the line and more
    assert not agrees("rust(a)", "rest(a)")
    assert not agrees("\n    next_line()", "rest(a)")
    assert agrees("\n    next_line()", "")  # at the line's end: adds nothing to it
    assert not agrees(")", "")


def test_first_suggestion_time_and_its_answer() -> None:
    visit = VisitLog(0, False, "abcdef", (100.0, 200.0, 300.0), 400.0)
    wrong = _answer(0, 90.0, "xyz")
    right = _answer(1, 230.0, "bcdef")
    found = first_suggestion(visit, [wrong, right])
    assert found is not None and found[0] == pytest.approx(130.0) and found[1] is right
    assert first_suggestion(visit, [wrong]) is None
    # Already on screen when the first key lands: 0 ms.
    ready = first_suggestion(visit, [_answer(0, 50.0, "abcdef")])
    assert ready is not None and ready[0] == 0.0


def test_summaries_split_new_places_and_returns() -> None:
    visits = [VisitLog(0, False, "abc", (100.0, 200.0, 300.0), 400.0),
              VisitLog(1, True, "xyz", (1100.0, 1200.0, 1300.0), 1400.0)]
    requests = [_answer(0, 50.0, "abc"),
                RequestLog(visit=1, typed=3, sent_ms=1300.0, outcome="cancelled",
                           cancelled_ms=1400.0)]
    places = place_results(visits, requests)
    summary = visibility_summary(places)
    assert summary["keystrokes"] == 6 and summary["visible"] == 2
    assert summary["never_shown"] == {"new": 0, "return": 1}
    assert summary["first_suggestion_ms"]["new"]["p50"] == 0.0
    counts = request_summary(requests)
    assert (counts["sent"], counts["answered"], counts["cancelled"], counts["empty"]) == (
        2, 1, 1, 0)


def test_suggestion_text_drops_what_the_item_repeats() -> None:
    line = "    total = compute("
    cursor = Position(3, 20)
    item = {"insertText": "compute(a, b)",
            "range": {"start": {"line": 3, "character": 12},
                      "end": {"line": 3, "character": 20}}}
    assert suggestion_text({"items": [item]}, line, cursor) == "a, b)"
    assert suggestion_text([{"insertText": "x)"}], line, cursor) == "x)"
    assert suggestion_text([], line, cursor) == ""


# --- the plan and the schedules ---------------------------------------------------------

def _apply(text: str, change: dict[str, object]) -> str:
    """One incremental change on one line, columns in UTF-16 units."""
    lines = text.split("\n")
    span = change["range"]
    assert isinstance(span, dict)
    start, end = span["start"], span["end"]
    assert start["line"] == end["line"]
    line = lines[start["line"]]
    lines[start["line"]] = (line[: utf16_to_index(line, start["character"])]
                            + str(change["text"]) + line[utf16_to_index(line, end["character"]):])
    return "\n".join(lines)


def test_the_plan_switches_documents_returns_and_rebuilds_the_files(tmp_path: Path) -> None:
    files = load_files(_files(tmp_path))
    plan = build_plan(files, places=6, returns=2, seed=3, max_chars=40)
    assert plan == build_plan(files, places=6, returns=2, seed=3, max_chars=40)
    visits = plan.visits
    assert sum(v.is_return for v in visits) == 2
    assert all(a.file != b.file for a, b in itertools.pairwise(visits))
    texts = {i: f.text for i, f in enumerate(files)}
    for visit in visits:
        assert visit.cut >= 2 and len(visit.removed) >= 8
        assert not visit.body.startswith("@")
        if visit.return_of is not None:
            earlier = visits[visit.return_of]
            assert (earlier.file, earlier.line) == (visit.file, visit.line)
        texts[visit.file] = _apply(texts[visit.file], delete_change(visit))
        for typed in range(1, len(visit.removed) + 1):
            texts[visit.file] = _apply(texts[visit.file], type_change(visit, typed))
    for index, file in enumerate(files):  # visited lines lose only trailing whitespace
        expected = [line.rstrip() if any(v.file == index and v.line == number for v in visits)
                    else line for number, line in enumerate(file.text.split("\n"))]
        assert texts[index] == "\n".join(expected)


def test_the_plan_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    files = load_files(_files(tmp_path))
    with pytest.raises(PlanError, match="at least 2 files"):
        build_plan(files[:1], places=3, returns=0, seed=0, max_chars=40)
    with pytest.raises(PlanError, match="too many"):
        build_plan(files, places=3, returns=2, seed=0, max_chars=40)


def test_vscode_asks_on_landing_and_after_every_edit(tmp_path: Path) -> None:
    visit = build_plan(load_files(_files(tmp_path)), 3, 1, 0, 40).visits[0]
    actions = schedule(visit, Timing(2000, 150, 1000), "vscode", focus=True)
    requests = [a for a in actions if a.kind == REQUEST]
    assert [a.typed for a in requests] == list(range(-1, len(visit.removed) + 1))
    focus = [a.at_ms for a in actions if a.kind == FOCUS]
    last_key = max(a.at_ms for a in actions if a.kind == TYPE)
    assert focus == [0.0, 500.0, last_key + 500.0]


def test_neovim_debounces_its_requests(tmp_path: Path) -> None:
    visit = build_plan(load_files(_files(tmp_path)), 3, 1, 0, 40).visits[0]
    fast = schedule(visit, Timing(2000, 150, 1000), "neovim", focus=False)
    last_key = max(a.at_ms for a in fast if a.kind == TYPE)
    assert [(a.at_ms, a.typed) for a in fast if a.kind == REQUEST] == [
        (last_key + NEOVIM_DEBOUNCE_MS, len(visit.removed))]
    assert not any(a.kind == FOCUS for a in fast)
    slow = schedule(visit, Timing(2000, 250, 1000), "neovim", focus=False)
    assert [a.typed for a in slow if a.kind == REQUEST] == list(range(len(visit.removed) + 1))


def test_the_live_neovim_plugin_asks_after_the_deletion_and_every_keystroke(
        tmp_path: Path) -> None:
    visit = build_plan(load_files(_files(tmp_path)), 3, 1, 0, 40).visits[0]
    actions = schedule(visit, Timing(2000, 150, 1000), "neovim-live", focus=False)
    edits = [a.at_ms for a in actions if a.kind in (TYPE, DELETE)]
    requests = [a for a in actions if a.kind == REQUEST]
    assert [a.at_ms for a in requests] == edits
    assert [a.typed for a in requests] == list(range(len(visit.removed) + 1))


# --- against flashls serve --engine fake -------------------------------------------------

@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHLS_FAKE_TOKEN_MS", "1")


@pytest.mark.usefixtures("fake_engine")
@pytest.mark.parametrize("editor", ["vscode", "neovim", "neovim-live"])
def test_a_session_runs_and_its_counts_add_up(tmp_path: Path, editor: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["bench", "session", "--files", *_files(tmp_path), "--places", "3",
                 "--returns", "1", "--read-ms", "100", "--interval-ms", "50",
                 "--linger-ms", "600", "--max-chars", "10", "--editor", editor, *FAKE,
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    [json_path] = out.glob("session-*.json")
    assert json_path.with_suffix(".png").stat().st_size > 0
    assert "visible rate" in printed and "no-focus" in printed
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    typed = sum(len(visit["removed"]) for visit in payload["visits"])
    assert sum(visit["return_of"] is not None for visit in payload["visits"]) == 1
    for name, focus_sent in (("flashls", 3 * 2), ("no-focus", 0)):
        variant = payload["variants"][name]
        summary, requests = variant["summary"], variant["summary"]["requests"]
        assert summary["keystrokes"] == typed
        assert requests["sent"] == len(variant["requests"]) > 0
        assert requests["answered"] + requests["cancelled"] == requests["sent"]
        assert summary["notifications"].get("textDocument/didFocus", 0) == focus_sent
        assert summary["places"] == {"new": 2, "return": 1}
        if editor == "vscode":  # landing, deletion, one per keystroke
            assert requests["sent"] == 3 * 2 + typed
        elif editor == "neovim-live":  # deletion (entering insert mode), one per keystroke
            assert requests["sent"] == 3 + typed
        else:  # typing at 50 ms never lets the 200 ms debounce run out before the end
            assert requests["sent"] == 3
        # The fake answers in milliseconds: at least the last keystroke of each place, with
        # 600 ms to wait, shows its suggestion.
        assert summary["visible"] >= 3
        assert summary["correct_visible"] <= summary["visible"]
        assert summary["rss_mb"]["peak"] >= summary["rss_mb"]["before"] > 0


@pytest.mark.usefixtures("fake_engine")
async def test_the_servers_copy_matches_the_editors_after_a_session(tmp_path: Path) -> None:
    paths = _files(tmp_path)
    files = load_files(paths)
    plan = build_plan(files, places=4, returns=1, seed=30, max_chars=40)
    # The seed visits the line with trailing blanks and a non-BMP character twice, typing
    # the character (two UTF-16 units) each time.
    assert sum("🐍" in visit.removed for visit in plan.visits) == 2
    client = await LspClient.start([sys.executable, "-m", "flashls", "serve", "--engine",
                                    "fake"])
    try:
        await initialize_server(client, 60)
        log = await SessionDriver(client, plan, "vscode", True, Timing(50, 20, 100),
                                  30).run()
        for index, file in enumerate(files):
            visited = {v.line for v in plan.visits if v.file == index}
            expected = "\n".join(line.rstrip() if number in visited else line
                                 for number, line in enumerate(file.text.split("\n")))
            digest = await client.request("flashls/documentDigest",
                                          {"textDocument": {"uri": file.uri}}, 30)
            assert digest.result["sha256"] == hashlib.sha256(expected.encode()).hexdigest()
        assert all(request.outcome in ("answered", "cancelled") for request in log.requests)
        await client.close()
    finally:
        await client.kill()


@pytest.mark.usefixtures("fake_engine")
def test_a_session_can_open_a_workspace_folder(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    files = _files(tmp_path)
    common = ["bench", "session", "--files", *files, "--places", "2", "--returns", "0",
              "--read-ms", "50", "--interval-ms", "30", "--linger-ms", "100",
              "--max-chars", "8", "--no-baseline", *FAKE, "--out", str(tmp_path / "out")]
    assert main([*common, "--workspace", str(tmp_path / "missing")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main([*common, "--workspace", str(tmp_path),
                 "--server-arg=--context-sources=definitions"]) == 0, capsys.readouterr()
    [json_path] = (tmp_path / "out").glob("session-*.json")
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    assert payload["config"]["workspace"] == str(tmp_path)
    assert payload["variants"]["flashls"]["summary"]["requests"]["error"] == 0


def test_the_baseline_is_no_focus_other_flags_or_another_command() -> None:
    from flashls.bench.session import SessionConfig, variants

    serve = (sys.executable, "-m", "flashls", "serve", "--n-threads=2")
    plain = variants(SessionConfig(server_args=("--n-threads=2",)))
    assert [(v.name, v.command, v.focus) for v in plain] == [
        ("flashls", serve, True), ("no-focus", serve, False)]
    flags = variants(SessionConfig(server_args=("--n-threads=2",), baseline_args=("--x",)))
    assert flags[1].command == (*serve, "--x") and flags[1].focus
    older = ("env", "PYTHONPATH=/tmp/old", "python", "-m", "flashls", "serve")
    other = variants(SessionConfig(server_args=("--n-threads=2",), baseline_args=("--x",),
                                   baseline_command=older))
    assert other[1].command == (*older, "--n-threads=2", "--x") and other[1].focus
    alone = variants(SessionConfig(baseline=False, baseline_command=older))
    assert [v.name for v in alone] == ["flashls"]
