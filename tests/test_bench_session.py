"""Tests of `flashls bench session`: the plan, the editor profiles' schedules, what counts
as visible, strict and lenient on hand-made timelines, the figures over them, and short
sessions against `flashls serve --engine fake` with every profile, and through a stand-in
llama-server.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import random
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from flashls.bench import llama_server, session
from flashls.bench.client import LspClient
from flashls.bench.harness import initialize_server
from flashls.bench.session_drive import SessionDriver, suggestion_text
from flashls.bench.session_editor import (
    DELETE,
    END,
    FOCUS,
    NEOVIM_DEBOUNCE_MS,
    PASTE,
    REQUEST,
    TYPE,
    Timing,
    schedule,
)
from flashls.bench.session_metrics import (
    KeystrokeView,
    PlaceResult,
    RequestLog,
    VisitLog,
    blank_run_summary,
    by_index,
    first_suggestion,
    keystroke_views,
    longest_blank_run,
    place_results,
    request_summary,
    shown_at,
    visibility_summary,
)
from flashls.bench.session_plan import (
    PlanError,
    Visit,
    build_plan,
    delete_change,
    draw_typed_chars,
    load_files,
    paste_change,
    type_change,
)
from flashls.bench.trace import Position, utf16_to_index
from flashls.cli import main
from tests.test_remote_engines import Behaviour, FakeServer

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
    assert [view.rest for view in views] == ["oin(a, b)", "in(a, b)", "n(a, b)", "(a, b)"]
    assert all(view.visible and view.strict and view.lenient for view in views)
    assert [view.accept_chars for view in views] == [9, 8, 7, 6]


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


def _view(shown: str | None, rest: str) -> KeystrokeView:
    return KeystrokeView(1, shown, rest)


def test_a_one_word_suggestion_is_lenient_but_not_strict() -> None:
    word = _view("total", "total(a, b)")
    assert (word.visible, word.strict, word.lenient, word.accept_chars) == (
        True, False, True, 5)
    whole = _view("total(a, b)\n    more()", "total(a, b)")  # the first line is judged
    assert (whole.strict, whole.lenient, whole.accept_chars) == (True, True, 11)
    assert _view("total(a, b)  ", "total(a, b)").strict  # trailing blanks do not count
    beyond = _view("total(a, b))", "total(a, b)")  # the line and more: lenient only
    assert (beyond.strict, beyond.lenient, beyond.accept_chars) == (False, True, 11)


def test_accept_chars_are_the_common_prefix_with_the_rest_of_the_line() -> None:
    wrong = _view("totals[0]", "total(a, b)")
    assert (wrong.visible, wrong.strict, wrong.lenient, wrong.accept_chars) == (
        True, False, False, 5)
    assert _view("x", "total").accept_chars == 0
    nothing = _view(None, "total")
    assert (nothing.visible, nothing.strict, nothing.lenient, nothing.accept_chars) == (
        False, False, False, 0)
    next_line = _view("\n    next_line()", "total")  # nothing on this line
    assert (next_line.visible, next_line.lenient, next_line.accept_chars) == (False, False, 0)


def test_at_the_end_of_the_line_strict_means_nothing_shown() -> None:
    assert _view(None, "").strict and _view("\n    next_line()", "").strict
    more = _view(")", "")
    assert (more.visible, more.strict, more.accept_chars) == (True, False, 0)


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


def test_the_longest_blank_run_of_a_visit() -> None:
    visit = VisitLog(0, False, "abcdefgh", (100.0, 200.0, 300.0, 400.0, 500.0, 600.0), 700.0)
    answers = [_answer(0, 50.0, "abXdef"),  # agrees with "a" and "ab", then disagrees
               _answer(4, 550.0, "efgh")]  # arrives between keystrokes 5 and 6
    [place] = place_results([visit], answers)
    assert [view.visible for view in place.keystrokes] == [True, True, False, False, True,
                                                           True]
    assert place.blank_run == 2
    assert [view.lenient for view in place.keystrokes] == [False, False, False, False, True,
                                                           True]
    assert longest_blank_run([]) == 0
    assert longest_blank_run([_view(None, "x")] * 3) == 3


def test_blank_runs_are_summarized_over_places() -> None:
    places = [PlaceResult(index, False, [_view(None, "x")] * run + [_view("x", "x")])
              for index, run in enumerate((0, 2, 2, 5))]
    summary = blank_run_summary(places)
    assert summary["histogram"] == {"0": 1, "2": 2, "5": 1}
    assert (summary["p50"], summary["max"]) == (2.0, 5)
    assert summary["p90"] == pytest.approx(4.1)


def test_keystrokes_are_bucketed_by_their_index_at_the_place() -> None:
    views = [KeystrokeView(typed, "x" if typed % 2 else None, "x") for typed in range(1, 16)]
    buckets = by_index(views)
    assert list(buckets) == [*map(str, range(1, 13)), "13+"]
    assert buckets["1"]["visible_rate"] == 1.0 and buckets["2"]["visible_rate"] == 0.0
    assert buckets["1"]["strict"] == 1 and buckets["1"]["accept_chars_per_keystroke"] == 1.0
    assert buckets["13+"]["keystrokes"] == 3 and buckets["13+"]["visible"] == 2
    assert by_index(views[:3])["7"]["keystrokes"] == 0
    assert by_index(views[:3])["7"]["visible_rate"] is None


def test_summaries_split_new_places_and_returns() -> None:
    visits = [VisitLog(0, False, "abcde", (100.0, 200.0, 300.0), 400.0),
              VisitLog(1, True, "xyz", (1100.0, 1200.0, 1300.0), 1400.0)]
    requests = [_answer(0, 50.0, "ab"),
                RequestLog(visit=1, typed=0, sent_ms=1000.0, outcome="answered",
                           arrived_ms=1050.0, suggestion="xyz"),
                RequestLog(visit=1, typed=3, sent_ms=1300.0, outcome="cancelled",
                           cancelled_ms=1400.0)]
    places = place_results(visits, requests)
    summary = visibility_summary(places)
    new, returns = summary["new"], summary["return"]
    assert (new["places"], new["keystrokes"], returns["places"], returns["keystrokes"]) == (
        1, 3, 1, 3)
    # New place: "b" shows after "a" (one word of "bcde": lenient), then nothing.
    assert (new["visible"], new["strict"], new["lenient"], new["accept_chars"]) == (
        1, 0, 1, 1)
    assert new["accept_chars_per_keystroke"] == pytest.approx(1 / 3)
    assert new["blank_run"]["max"] == 2 and new["by_index"]["2"]["visible"] == 0
    # The return shows the whole rest, then nothing at the line's end: strict throughout.
    assert (returns["visible"], returns["strict"], returns["lenient"]) == (2, 3, 2)
    assert new["never_shown"] == returns["never_shown"] == 0
    assert new["first_suggestion_ms"]["p50"] == 0.0
    counts = request_summary(requests)
    assert (counts["sent"], counts["answered"], counts["cancelled"], counts["empty"]) == (
        3, 2, 1, 0)


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


def _play(text: str, visit: Visit) -> str:
    """The file after one visit's edits: the deletion, each keystroke, the paste."""
    text = _apply(text, delete_change(visit))
    for typed in range(1, visit.typed_chars + 1):
        text = _apply(text, type_change(visit, typed))
    paste = paste_change(visit)
    return text if paste is None else _apply(text, paste)


def test_the_plan_switches_documents_returns_and_rebuilds_the_files(tmp_path: Path) -> None:
    files = load_files(_files(tmp_path))
    plan = build_plan(files, places=6, returns=2, seed=3, max_chars=40)
    assert plan == build_plan(files, places=6, returns=2, seed=3, max_chars=40)
    visits = plan.visits
    assert sum(v.is_return for v in visits) == 2
    assert all(a.file != b.file for a, b in itertools.pairwise(visits))
    texts = {i: f.text.split("\n") for i, f in enumerate(files)}
    for visit in visits:
        assert visit.cut >= 2 and 8 <= len(visit.removed) <= 40
        assert 1 <= visit.typed_chars <= len(visit.removed)
        assert not visit.body.startswith("@")
        if visit.return_of is not None:  # the same characters as at the first visit
            earlier = visits[visit.return_of]
            assert (earlier.file, earlier.line, earlier.cut) == (visit.file, visit.line,
                                                                  visit.cut)
            assert earlier.typed == visit.typed
        before = texts[visit.file]
        after = _play("\n".join(before), visit).split("\n")
        # The visited line is whole again (less trailing blanks); no other line moved.
        assert after[visit.line] == before[visit.line].rstrip()
        assert after[:visit.line] + after[visit.line + 1:] == (
            before[:visit.line] + before[visit.line + 1:])
        texts[visit.file] = after
    assert any(v.typed_chars < len(v.removed) for v in visits)  # some text was pasted


def test_visit_lengths_are_mostly_short_and_never_beyond_the_deleted_text(
        tmp_path: Path) -> None:
    rng = random.Random(0)
    drawn = [draw_typed_chars(rng, 40) for _ in range(2000)]
    assert min(drawn) == 3 and max(drawn) == 40
    assert 0.65 < sum(n <= 12 for n in drawn) / len(drawn) < 0.75
    assert {draw_typed_chars(rng, 10) for _ in range(200)} == set(range(3, 11))
    files = load_files(_files(tmp_path))
    for seed in range(10):
        for visit in build_plan(files, places=8, returns=0, seed=seed, max_chars=40).visits:
            assert min(3, len(visit.removed)) <= visit.typed_chars <= len(visit.removed)
            assert visit.typed == visit.removed[:visit.typed_chars]
        fixed = build_plan(files, places=8, returns=0, seed=seed, max_chars=40,
                           visit_chars=12).visits
        assert all(v.typed_chars == min(12, len(v.removed)) for v in fixed)


def _config(*flags: str) -> session.SessionConfig:
    parser = argparse.ArgumentParser()
    session.add_arguments(parser)
    return session.config_from_arguments(parser.parse_args(list(flags)))


def test_the_heldout_profile_and_the_flags_that_override_it() -> None:
    plain = _config()
    assert (plain.visit_chars, plain.returns, plain.places) == ("short", 5, 15)
    heldout = _config("--profile", "heldout")
    assert (heldout.visit_chars, heldout.returns, heldout.read_ms, heldout.interval_ms,
            heldout.places, heldout.cut, heldout.profile) == (
        "12", 0, 2000.0, 150.0, 15, "start", "heldout")
    assert plain.cut == "tail"
    mixed = _config("--read-ms", "300", "--profile", "heldout", "--returns", "2",
                    "--visit-chars", "short")
    assert (mixed.visit_chars, mixed.returns, mixed.read_ms, mixed.interval_ms) == (
        "short", 2, 300.0, 150.0)
    with pytest.raises(session.BenchError, match="--visit-chars"):
        _config("--visit-chars", "many")


def test_cutting_at_the_start_types_each_line_from_its_first_character(
        tmp_path: Path) -> None:
    files = load_files(_files(tmp_path))
    plan = build_plan(files, places=6, returns=0, seed=1, max_chars=40, visit_chars=12,
                      cut="start")
    for visit in plan.visits:
        assert visit.cut == 0 and visit.removed == visit.body
        assert visit.typed_chars == min(12, len(visit.body))
    tails = build_plan(files, places=6, returns=0, seed=1, max_chars=40, visit_chars=12)
    assert all(len(visit.removed) <= 40 for visit in tails.visits)
    assert any(visit.cut > 0 for visit in tails.visits)


def test_the_plan_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    files = load_files(_files(tmp_path))
    with pytest.raises(PlanError, match="at least 2 files"):
        build_plan(files[:1], places=3, returns=0, seed=0, max_chars=40)
    with pytest.raises(PlanError, match="too many"):
        build_plan(files, places=3, returns=2, seed=0, max_chars=40)


def test_vscode_asks_after_every_edit_not_on_landing(tmp_path: Path) -> None:
    visit = build_plan(load_files(_files(tmp_path)), 3, 1, 0, 40).visits[0]
    actions = schedule(visit, Timing(2000, 150, 1000), "vscode", focus=True)
    requests = [a for a in actions if a.kind == REQUEST]
    assert [a.typed for a in requests] == list(range(visit.typed_chars + 1))
    assert requests[0].at_ms == 2000.0  # the deletion; the cursor's move asked nothing
    assert [a.typed for a in actions if a.kind == TYPE] == list(range(1, visit.typed_chars + 1))
    focus = [a.at_ms for a in actions if a.kind == FOCUS]
    last_key = max(a.at_ms for a in actions if a.kind == TYPE)
    assert focus == [0.0, 500.0, last_key + 500.0]
    # The rest is pasted back as the user leaves, after the pending request is cancelled.
    assert [a.kind for a in actions[-2:]] == [END, PASTE]
    assert actions[-1].at_ms == last_key + 1000.0


def test_neovim_debounces_its_requests(tmp_path: Path) -> None:
    visit = build_plan(load_files(_files(tmp_path)), 3, 1, 0, 40).visits[0]
    fast = schedule(visit, Timing(2000, 150, 1000), "neovim", focus=False)
    last_key = max(a.at_ms for a in fast if a.kind == TYPE)
    assert [(a.at_ms, a.typed) for a in fast if a.kind == REQUEST] == [
        (last_key + NEOVIM_DEBOUNCE_MS, visit.typed_chars)]
    assert not any(a.kind == FOCUS for a in fast)
    slow = schedule(visit, Timing(2000, 250, 1000), "neovim", focus=False)
    assert [a.typed for a in slow if a.kind == REQUEST] == list(range(visit.typed_chars + 1))


def test_the_live_neovim_plugin_asks_after_the_deletion_and_every_keystroke(
        tmp_path: Path) -> None:
    visit = build_plan(load_files(_files(tmp_path)), 3, 1, 0, 40).visits[0]
    actions = schedule(visit, Timing(2000, 150, 1000), "neovim-live", focus=False)
    edits = [a.at_ms for a in actions if a.kind in (TYPE, DELETE)]
    requests = [a for a in actions if a.kind == REQUEST]
    assert [a.at_ms for a in requests] == edits
    assert [a.typed for a in requests] == list(range(visit.typed_chars + 1))


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
    assert "strict rate" in printed and "no-focus" in printed
    assert "returns (re-type an earlier visit's text)" in printed
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    visits = payload["visits"]
    assert [visit["kind"] for visit in visits].count("return") == 1
    assert all(visit["kind"] == ("return" if visit["return_of"] is not None else "new")
               for visit in visits)
    assert all(3 <= visit["typed_chars"] <= len(visit["removed"]) for visit in visits)
    typed = sum(visit["typed_chars"] for visit in visits)
    typed_new = sum(visit["typed_chars"] for visit in visits if visit["kind"] == "new")
    for name, focus_sent in (("flashls", 3 * 2), ("no-focus", 0)):
        variant = payload["variants"][name]
        summary, requests = variant["summary"], variant["summary"]["requests"]
        new, returns = summary["new"], summary["return"]
        assert (new["places"], returns["places"]) == (2, 1)
        assert (new["keystrokes"], returns["keystrokes"]) == (typed_new, typed - typed_new)
        assert sum(bucket["keystrokes"] for bucket in new["by_index"].values()) == typed_new
        assert [len(place["visible"]) for place in variant["places"]] == [
            visit["typed_chars"] for visit in visits]
        assert requests["sent"] == len(variant["requests"]) > 0
        assert requests["answered"] + requests["cancelled"] == requests["sent"]
        assert summary["notifications"].get("textDocument/didFocus", 0) == focus_sent
        if editor in ("vscode", "neovim-live"):  # deletion, one per keystroke
            assert requests["sent"] == 3 + typed
        else:  # typing at 50 ms never lets the 200 ms debounce run out before the end
            assert requests["sent"] == 3
        # The fake answers in milliseconds: at least the last keystroke of each place, with
        # 600 ms to wait, shows its suggestion.
        assert new["visible"] >= 2 and returns["visible"] >= 1
        assert new["lenient"] <= new["visible"]
        new_places = [place for place in variant["places"] if place["kind"] == "new"]
        assert new["accept_chars"] == sum(sum(place["accept_chars"]) for place in new_places)
        # It never writes the line's code: strict only where nothing shows at the line's end.
        assert new["strict"] == sum(strict and not visible for place in new_places
                                    for strict, visible in zip(place["strict"],
                                                               place["visible"], strict=True))
        assert new["blank_run"]["max"] == max(place["blank_run"] for place in new_places)
        assert sum(new["blank_run"]["histogram"].values()) == 2
        assert new["first_suggestion_ms"]["p50"] is not None
        assert summary["rss_mb"]["peak"] >= summary["rss_mb"]["before"] > 0
    assert "new.strict_rate" in payload["comparison"]
    assert "new.by_index.13+.lenient_rate" in payload["comparison"]


@pytest.mark.usefixtures("fake_engine")
@pytest.mark.parametrize(("seed", "typed", "pasted"), [(30, 0, 2), (129, 2, 0)])
async def test_the_servers_copy_matches_the_editors_after_a_session(
        tmp_path: Path, seed: int, typed: int, pasted: int) -> None:
    paths = _files(tmp_path)
    files = load_files(paths)
    plan = build_plan(files, places=4, returns=1, seed=seed, max_chars=40)
    # Each seed visits the line with trailing blanks and a non-BMP character twice (a
    # place and its return): 30 pastes the character (two UTF-16 units) back both times;
    # 129 types it, then pastes the rest of the line after it.
    assert sum("🐍" in visit.typed for visit in plan.visits) == typed
    assert sum("🐍" in visit.removed[visit.typed_chars:] for visit in plan.visits) == pasted
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


async def test_the_llama_server_runs_the_default_model_on_a_free_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def recorded(name: str, command: list[str], endpoint: str, ready_path: str,
                       timeout_s: float) -> AsyncIterator[None]:
        seen.update(command=command, endpoint=endpoint, ready=ready_path, timeout=timeout_s)
        yield

    monkeypatch.setattr(llama_server, "serving", recorded)
    monkeypatch.setattr(session, "llama_server_binary", lambda configured: "/opt/llama-server")
    monkeypatch.setattr(session, "model_file",
                        lambda model: model or "/models/default.gguf")
    config = session.SessionConfig(llama_server=True, llama_server_threads=3,
                                   startup_timeout_s=9.0)
    async with session.engine_arguments(config) as extra:
        port = seen["endpoint"].rsplit(":", 1)[1]
        assert seen["endpoint"] == f"http://127.0.0.1:{port}"
        assert extra == ("--engine", "llama-server", "--endpoint", seen["endpoint"])
        assert seen["command"] == [
            "/opt/llama-server", "-m", "/models/default.gguf", "--host", "127.0.0.1",
            "--port", port, "-np", "1", "-c", "4096", "-t", "3", "-b", "128", "-ub", "128",
            "--metrics", "--slots"]
        assert (seen["ready"], seen["timeout"]) == ("/health", 9.0)
    async with session.engine_arguments(session.SessionConfig()) as extra:
        assert extra == ()


@pytest.fixture
def stand_in_llama_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeServer]]:
    """`--llama-server` starts a stand-in speaking llama-server's /infill instead; the list
    holds each one started, closed once its block ends."""
    servers: list[FakeServer] = []

    @contextlib.asynccontextmanager
    async def stand_in(config: session.SessionConfig) -> AsyncIterator[str]:
        server = FakeServer("llama-server", Behaviour())
        servers.append(server)
        try:
            yield server.endpoint
        finally:
            server.close()

    monkeypatch.setattr(session, "llama_server", stand_in)
    yield servers


def test_with_llama_server_each_variant_talks_to_its_own_server(
        tmp_path: Path, stand_in_llama_servers: list[FakeServer],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["bench", "session", "--files", *_files(tmp_path), "--places", "2",
                 "--returns", "0", "--read-ms", "50", "--interval-ms", "30",
                 "--linger-ms", "300", "--max-chars", "8", "--llama-server",
                 "--out-dir", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "through llama-server" in printed
    [json_path] = out.glob("session-*.json")
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    assert payload["config"]["llama_server"] is True
    assert len(stand_in_llama_servers) == 2  # one each: no prompt cache carried over
    for name, server in zip(("flashls", "no-focus"), stand_in_llama_servers, strict=True):
        variant = payload["variants"][name]
        assert variant["server_command"][-4:] == ["--engine", "llama-server", "--endpoint",
                                                  server.endpoint]
        assert any(path in ("/infill", "/completion") for path, _, _ in server.posts)
        requests = variant["summary"]["requests"]
        assert requests["answered"] > 0 and requests["error"] == 0


def test_the_benchmarks_doc_cites_the_flags_and_figures_that_exist() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    section = doc.split("## `flashls bench session`")[1].split("\n## ")[0]
    parser = argparse.ArgumentParser()
    session.add_arguments(parser)
    flags = set(re.findall(r"(?<![=\w-])--[a-z][a-z-]+", section))  # not a flag's value
    others = {"--engine", "--endpoint", "--metrics", "--slots"}  # flashls's, llama-server's
    assert {"--profile", "--visit-chars", "--llama-server", "--out-dir"} <= flags
    assert flags - others <= set(parser._option_string_actions)
    for label in ("strict rate", "lenient rate", "accept chars", "longest blank run",
                  "keystroke 1: vis/strict/len %", "returns (re-type an earlier visit's text)"):
        assert label in section, label


@pytest.mark.parametrize(("editor", "trigger"), [("vscode", 1), ("neovim-live", 1),
                                                 ("neovim", 2)])
async def test_the_editor_asks_again_where_a_finished_suggestion_was_announced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, editor: str, trigger: int) -> None:
    """A suggestion cut by the budget and finished later shows only because the editor asks
    again on flashls/suggestionFinished: the driver does so as each editor does, and the
    answer to that re-ask is what the screen holds at the end of the keystroke."""
    monkeypatch.setenv("FLASHLS_FAKE_TOKEN_MS", "100")
    plan = build_plan(load_files(_files(tmp_path)), places=2, returns=0, seed=1, max_chars=3)
    client = await LspClient.start([sys.executable, "-m", "flashls", "serve", "--engine",
                                    "fake", "--time-budget-ms", "150"])
    sent: list[dict[str, Any]] = []
    send = client.send_request

    async def record(method: str, params: Any) -> Any:
        if method == "textDocument/inlineCompletion":
            sent.append(params)
        return await send(method, params)

    client.send_request = record  # type: ignore[method-assign]
    try:
        await initialize_server(client, 60)
        log = await SessionDriver(client, plan, editor, True, Timing(300, 1000, 1500),
                                  30).run()
        await client.close()
    finally:
        await client.kill()
    assert log.finished >= 2 and 2 <= log.reasks <= log.finished
    reasks = [params for params in sent if params["context"]["triggerKind"] == 1]
    if trigger == 1:
        assert len(reasks) == log.reasks
    else:
        assert reasks == []
    # At the end of some keystroke the screen held a whole suggestion, which only a re-ask
    # brought: every keystroke's own request was cut after 150 ms with one or two tokens.
    whole = [request for request in log.requests if request.suggestion
             and request.suggestion.endswith(")")]
    assert whole
