"""Emacs drives flashls end to end: editors/emacs's ghost text over eglot and over lsp-mode.

Debian's `emacs-nox`, `elpa-eglot` (1.9) and `elpa-lsp-mode` (8.0) come from
`scripts/install.sh`. `emacs --batch` loads `editors/emacs/test/drive.el`, which opens a copy
of a real file, starts flashls through the client under test, types through the command loop
(`execute-kbd-macro`: keymaps, `post-command-hook` and timers act as for a user), waits for
the overlay, presses keys and reports what it saw as JSON. One test runs Emacs in a terminal
under tmux and reads the screen.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flashls.engine.fake import fake_middle
from tests.helpers_editors import Edit, cut_colorsys, inserted_at_cursor

pytestmark = pytest.mark.editor

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "editors" / "emacs"
DRIVER = PACKAGE / "test" / "drive.el"
EMACS = shutil.which("emacs")
TMUX = shutil.which("tmux")
CLIENTS = ["eglot", "lsp-mode"]


def require_editor(missing: str | None) -> None:
    """Skip when a tool is `missing`; fail instead where CI requires the editors."""
    if missing is None:
        return
    if os.environ.get("FLASHLS_REQUIRE_EDITORS") == "1":
        pytest.fail(f"required here: {missing}")
    pytest.skip(missing)


@pytest.fixture(autouse=True)
def emacs_installed() -> None:
    """Every test here needs Emacs (and eglot and lsp-mode, which fail loudly if absent)."""
    require_editor(None if EMACS else "no emacs: scripts/install.sh installs emacs-nox, "
                   "elpa-eglot and elpa-lsp-mode with apt-get (as root or with sudo)")


@pytest.fixture
def cut_line(tmp_path: Path) -> Edit:
    """colorsys.py whose `y = 0.30*r + ...` line stops after the first `+`."""
    return cut_colorsys(tmp_path / "project")


def server_command(tmp_path: Path, *args: str) -> list[str]:
    """`flashls serve ARGS`, logging to a file under `tmp_path` (which also marks its
    process, for the clean-up check)."""
    return [sys.executable, "-m", "flashls", "serve", "--log-file",
            str(tmp_path / "server.log"), *args]


def leftover_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if marker in command and state != "Z":
            found.append(command)
    return found


def assert_no_leftovers(tmp_path: Path) -> None:
    """The server started for this test has exited (within a few seconds of Emacs)."""
    deadline = time.monotonic() + 10
    while leftover_processes(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leftover_processes(str(tmp_path)), "flashls outlived Emacs"


def emacs_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """The environment for Emacs: its own HOME, and the driver's FLASHLS_EMACS_ variables."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "HOME": str(home),
            **{f"FLASHLS_EMACS_{name}": value for name, value in variables.items()}}


def run_emacs(tmp_path: Path, client: str, steps: list[list[Any]], command: list[str],
              *, budget_s: float = 90, server_env: dict[str, str] | None = None
              ) -> dict[str, Any]:
    """Run the driver's STEPS in `emacs --batch` and return its report."""
    assert EMACS is not None
    result = tmp_path / "report.json"
    env = emacs_env(tmp_path, CLIENT=client, CMD=json.dumps(command), RESULT=str(result),
                    STEPS=json.dumps(steps))
    env.update(server_env or {})
    started = time.monotonic()
    process = subprocess.run([EMACS, "--batch", "-l", str(DRIVER)], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=budget_s, check=False)
    print(f"emacs --batch ({client}): {time.monotonic() - started:.1f} s")
    log = tmp_path / "server.log"
    log_tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no server log)"
    assert result.exists(), (
        f"emacs exited {process.returncode} without a report\n{process.stderr}\n{log_tail}")
    report: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    assert process.returncode == 0 and report.get("stage") == "done", (
        f"stopped at {report.get('stage')}: {report.get('error')}\n"
        f"requests: {report.get('requests')}\nshown: {report.get('shown')}\n"
        f"{process.stderr[-3000:]}\n{log_tail}")
    assert_no_leftovers(tmp_path)
    return report


def inserted_text(edit: Edit, report: dict[str, Any]) -> str:
    """What went in at the cursor, checked against everything around it and the saved file."""
    after = report["buffer_lines"][:-1]  # the file ends with "\n"
    text = inserted_at_cursor(edit, after)
    assert edit.path.read_text(encoding="utf-8").splitlines() == after, "C-x C-s did not save"
    return text


def open_step(edit: Edit) -> list[Any]:
    return ["open", str(edit.path), edit.line, edit.col]


def test_the_package_byte_compiles_without_warnings(tmp_path: Path) -> None:
    """flashls.el, flashls-eglot.el and flashls-lsp.el compile with warnings as errors."""
    assert EMACS is not None
    for source in PACKAGE.glob("*.el"):
        shutil.copy(source, tmp_path)
    names = sorted(path.name for path in tmp_path.glob("*.el"))
    assert names == ["flashls-eglot.el", "flashls-lsp.el", "flashls.el"]
    process = subprocess.run(
        [EMACS, "--batch", "-L", str(tmp_path), "--eval", "(setq byte-compile-error-on-warn t)",
         "-f", "batch-byte-compile", *names],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    output = process.stdout + process.stderr
    assert process.returncode == 0 and "Warning" not in output, output
    assert sorted(path.name for path in tmp_path.glob("*.elc")) == [
        name + "c" for name in names]


@pytest.mark.parametrize("client", CLIENTS)
def test_fake_suggestion_shows_as_ghost_text_and_tab_accepts_it(
        tmp_path: Path, cut_line: Edit, client: str) -> None:
    """A typed space after `y = 0.30*r +` brings the fake engine's suggestion as an overlay;
    TAB inserts it and leaves the cursor after it. The server offers no completion items
    (they would show the suggestion twice): eglot announces inline completion, lsp-mode
    sets `completion_fallback`."""
    report = run_emacs(tmp_path, client, [
        open_step(cut_line), ["type", " ", 0], ["wait_ghost", 15_000], ["snapshot"],
        ["key", "TAB"], ["snapshot"], ["save"]], server_command(tmp_path, "--engine", "fake"))
    prefix = cut_line.original[cut_line.line - 1] + " "
    expected = fake_middle(prefix).splitlines()[0]
    assert report["completion_provider"] is False
    assert report["ghosts"][0]["text"] == expected
    request = report["requests"][0]
    assert (request["line"], request["character"], request["trigger"]) == (
        cut_line.line - 1, cut_line.col + 1, 2), "the request is not for the cursor"
    shown, accepted = report["snapshots"]
    assert shown["ghost"] == expected and shown["line"] == prefix
    assert accepted["command"] == "flashls-accept"
    assert accepted["line"] == prefix + expected
    assert accepted["point"] == [cut_line.line, len(prefix + expected)]
    assert inserted_text(cut_line, report) == " " + expected
    print(f"{client}: keystroke to ghost text {report['ghosts'][0]['after_key_ms']} ms")


@pytest.mark.parametrize("client", CLIENTS)
def test_typing_along_keeps_the_suggestion_and_each_key_asks(
        tmp_path: Path, cut_line: Edit, client: str) -> None:
    """Typing the suggestion's first characters a key every 100 ms: each key sends a
    request (the one in flight cancelled) and a suggestion agreeing with the text shows
    after each; TAB then takes the rest."""
    report = run_emacs(tmp_path, client, [
        open_step(cut_line), ["type", " ", 0], ["wait_ghost", 15_000],
        ["type_along", 4, 100], ["key", "TAB"], ["save"]],
        server_command(tmp_path, "--engine", "fake"))
    first = fake_middle(cut_line.original[cut_line.line - 1] + " ").splitlines()[0]
    steps = report["typed_along"]
    typed = "".join(step["character"] for step in steps)
    assert typed == first[:4]
    assert all(step["requests"] >= 1 for step in steps), steps
    assert all(step["shown"] for step in steps), steps
    inserted = inserted_text(cut_line, report)
    assert inserted.startswith(" " + typed) and len(inserted) > len(typed) + 1


@pytest.mark.parametrize("client", CLIENTS)
def test_each_key_cancels_the_request_in_flight(tmp_path: Path, cut_line: Edit,
                                                client: str) -> None:
    """Keys 100 ms apart while the fake engine takes 150 ms a token: the request in flight
    at each key is cancelled on the server (`$/cancelRequest`, which pygls logs at debug),
    and the last key's suggestion shows (its first words: the server answers partly)."""
    report = run_emacs(tmp_path, client, [
        open_step(cut_line), ["type", " ab", 100], ["wait_ghost", 15_000], ["snapshot"]],
        server_command(tmp_path, "--engine", "fake", "--log-level", "debug"),
        server_env={"FLASHLS_FAKE_TOKEN_MS": "150"})
    cancelled = (tmp_path / "server.log").read_text().count("Cancelled request with id")
    assert len(report["requests"]) == 3
    assert cancelled >= 2, f"{cancelled} requests cancelled on the server"
    prefix = cut_line.original[cut_line.line - 1] + " ab"
    ghost = report["snapshots"][0]["ghost"]
    assert ghost and fake_middle(prefix).startswith(ghost)


def test_accept_word_then_lines_of_a_block(tmp_path: Path) -> None:
    """RET after `def f(x):` indents the new line; the fake engine's block shows there as
    ghost text over two lines; M-f takes a word, M-e the rest of the line, M-e the next
    line."""
    lines = ["def f(x):", "", "print(f(1))"]
    path = tmp_path / "block.py"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = run_emacs(tmp_path, "eglot", [
        ["open", str(path), 1, len(lines[0])], ["key", "RET"], ["wait_ghost", 15_000],
        ["snapshot"], ["key", "M-f"], ["snapshot"], ["key", "M-e"], ["snapshot"],
        ["key", "M-e"], ["snapshot"], ["save"]], server_command(tmp_path, "--engine", "fake"))
    block = fake_middle("    ").rstrip()
    assert "\n" in block and report["ghosts"][0]["text"] == block
    word, rest = "fake_completion", block[len("fake_completion"):]
    first_line_rest, next_line = rest.split("\n", 1)
    shown, after_word, after_line, after_next = report["snapshots"]
    assert (shown["line"], shown["ghost"]) == ("    ", block)
    assert (after_word["line"], after_word["ghost"]) == ("    " + word, rest)
    assert (after_line["line"], after_line["ghost"]) == (
        "    " + word + first_line_rest, "\n" + next_line)
    assert after_next["line"] == next_line and after_next["ghost"] is None
    assert [snapshot["command"] for snapshot in report["snapshots"][1:]] == [
        "flashls-accept-word", "flashls-accept-line", "flashls-accept-line"]
    assert path.read_text(encoding="utf-8").splitlines() == [
        "def f(x):", "    " + block.split("\n")[0], next_line, "", "print(f(1))"]


@pytest.mark.parametrize("client", CLIENTS)
def test_next_candidate_asks_explicitly_and_shows_the_servers_other_one(
        tmp_path: Path, cut_line: Edit, client: str) -> None:
    """M-n with one suggestion asks again with trigger kind Invoked; the server's second
    candidate shows and TAB takes it."""
    report = run_emacs(tmp_path, client, [
        open_step(cut_line), ["type", " ", 0], ["wait_ghost", 15_000], ["key", "M-n"],
        ["wait_ghost", 15_000], ["key", "TAB"], ["save"]],
        server_command(tmp_path, "--engine", "fake"))
    first, second = (ghost["text"] for ghost in report["ghosts"])
    assert first == fake_middle(cut_line.original[cut_line.line - 1] + " ").splitlines()[0]
    assert second == "fake_alternative(1)"
    assert [request["trigger"] for request in report["requests"]][:2] == [2, 1]
    assert inserted_text(cut_line, report) == " fake_alternative(1)"


@pytest.mark.parametrize("client", CLIENTS)
def test_c_g_dismisses_and_tab_then_indents(tmp_path: Path, cut_line: Edit,
                                            client: str) -> None:
    """C-g hides the suggestion and nothing comes back without an edit; TAB with nothing
    shown is TAB's usual command."""
    report = run_emacs(tmp_path, client, [
        open_step(cut_line), ["type", " ", 0], ["wait_ghost", 15_000], ["key", "C-g"],
        ["rest", 500], ["snapshot"], ["key", "TAB"], ["snapshot"]],
        server_command(tmp_path, "--engine", "fake"))
    dismissed, tabbed = report["snapshots"]
    assert dismissed["ghost"] is None
    assert dismissed["command"] == "flashls-dismiss"
    assert tabbed["command"] == "indent-for-tab-command"
    assert "fake_completion" not in "\n".join(report["buffer_lines"])
    assert len(report["requests"]) == 1, "a request without an edit"


@pytest.mark.parametrize("client", CLIENTS)
def test_focus_and_yank_reach_the_server(tmp_path: Path, cut_line: Edit,
                                         client: str) -> None:
    """The cursor resting on a line sends `textDocument/didFocus`: the server warms that
    place (the fake engine counts a token a character). M-w sends the copied lines as
    `flashls/didYank`: with the `recent` source the next warm-up there counts them too."""
    rest_line = cut_line.line - 10
    report = run_emacs(tmp_path, client, [
        open_step(cut_line), ["goto", rest_line, 0], ["wait_status", "warm", 15_000],
        ["copy_lines", cut_line.line - 1, 2], ["goto", rest_line, 0],
        ["wait_status", "warm", 15_000]],
        server_command(tmp_path, "--engine", "fake", "--context-sources=recent"))
    focus = [sent for sent in report["sent"] if sent["method"] == "textDocument/didFocus"]
    assert {"line": rest_line - 1, "character": 0} in [sent["position"] for sent in focus]
    yanks = [sent for sent in report["sent"] if sent["method"] == "flashls/didYank"]
    copied = cut_line.original[cut_line.line - 2:cut_line.line]
    assert [(yank["file"], yank["text"]) for yank in yanks] == [
        (cut_line.path.name, "\n".join(copied) + "\n")]
    before, after = (int(status["message"].split()[1])
                     for status in report["waited_statuses"])
    assert after - before == len("\n".join(copied)), report["waited_statuses"]
    assert not report["requests"], "no edit was made, yet a suggestion was asked for"


@pytest.fixture
def first_file(cut_line: Edit) -> Path:
    """Another real module (bisect.py) in the same project, shown in another window."""
    path = cut_line.path.parent / "bisect.py"
    shutil.copyfile(bisect.__file__, path)
    return path


@pytest.mark.parametrize("client", CLIENTS)
def test_a_finished_suggestion_is_asked_for_again_in_its_buffer_only(
        tmp_path: Path, cut_line: Edit, first_file: Path, client: str) -> None:
    """A suggestion cut by the time budget is finished in the background; on the server's
    `flashls/suggestionFinished` the buffer it is for asks again and shows all of it; the
    other flashls buffer on screen asks for nothing."""
    # 7 tokens at 150 ms each: a 300 ms budget cuts it however fast the machine is.
    report = run_emacs(tmp_path, client, [
        ["open", str(first_file), 10, 0], ["split"], open_step(cut_line), ["type", " ", 0],
        ["wait_ghost", 15_000], ["wait_finished", 15_000], ["key", "TAB"], ["save"]],
        server_command(tmp_path, "--engine", "fake", "--time-budget-ms", "300"),
        server_env={"FLASHLS_FAKE_TOKEN_MS": "150"})
    expected = fake_middle(cut_line.original[cut_line.line - 1] + " ").splitlines()[0]
    finished = report["finished"][0]
    assert (finished["file"], finished["line"], finished["character"]) == (
        cut_line.path.name, cut_line.line - 1, cut_line.col + 1)
    before = [shown["text"] for shown in report["shown"]
              if shown["t_ms"] < finished["t_ms"] and shown["text"]]
    assert before and all(expected.startswith(text) and text != expected
                          for text in before), report["shown"]
    again = [request for request in report["requests"] if request["sent_ms"] >= finished["t_ms"]]
    assert again and again[0]["file"] == cut_line.path.name
    assert {request["file"] for request in report["requests"]} == {cut_line.path.name}
    assert report["ghost_after_finished"] == expected
    assert inserted_text(cut_line, report) == " " + expected


@pytest.mark.model
def test_default_model_suggestion_is_shown_and_accepted_over_eglot(
        tmp_path: Path, cut_line: Edit, model_path: Path) -> None:
    """With the real default model and default settings, a typed space after `y = 0.30*r +`
    brings a suggestion (from the short window, or once the server has finished it and
    the package asked again); TAB inserts it as shown."""
    # The wait is a hang guard, not a target: a busy 2-core machine takes a minute or
    # more for the full prompt.
    command = server_command(tmp_path, "--model", str(model_path), "--n-threads", "2")
    report = run_emacs(tmp_path, "eglot", [
        open_step(cut_line), ["type", " ", 0], ["wait_ghost", 150_000], ["key", "TAB"],
        ["save"]], command, budget_s=300)
    shown = report["ghosts"][0]["text"]
    text = inserted_text(cut_line, report)
    assert shown.strip() and text == " " + shown
    assert "\n" not in text, f"a mid-expression suggestion stays on its line: {text!r}"
    print(f"default model over eglot: keystroke to ghost text "
          f"{report['ghosts'][0]['after_key_ms']} ms, finished notifications "
          f"{len(report['finished'])}: {shown!r}")


def saved_line(edit: Edit) -> str | None:
    """The edited line as the file on disk has it (None while Emacs is writing it)."""
    lines = edit.path.read_text(encoding="utf-8").splitlines()
    return lines[edit.line - 1] if len(lines) >= edit.line else None


SGR = re.compile("\x1b\\[[0-9;]*m")  # a colour or attribute escape sequence


def sgr_at(drawn: str, column: int) -> str:
    """The colour escape sequences (SGR) a captured line `drawn` has just before the
    character at `column` (counted in visible characters)."""
    visible, sequences, index = 0, "", 0
    while index < len(drawn):
        if match := SGR.match(drawn, index):
            sequences += match.group()
            index = match.end()
            continue
        if visible == column:
            return sequences
        visible, sequences, index = visible + 1, "", index + 1
    return sequences


class Terminal:
    """Emacs in a tmux pane on a private socket, 120x40."""

    def __init__(self, tmp_path: Path) -> None:
        assert TMUX is not None
        self.socket = str(tmp_path / "tmux.sock")

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        return subprocess.run([TMUX, "-S", self.socket, *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout

    def close(self) -> None:
        """End the tmux server, and Emacs in it (its server then sees end of input)."""
        assert TMUX is not None
        subprocess.run([TMUX, "-S", self.socket, "kill-server"], capture_output=True,
                       timeout=10, check=False)

    def screen(self, escapes: bool = False) -> str:
        """The pane's text; with `escapes`, with its colours as SGR sequences."""
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "emacs")

    def ghost(self, head: str, timeout_s: float) -> tuple[str, str] | None:
        """The first line on screen that goes on after `head`, its text after it and the
        line as drawn (with escapes); None when none shows within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for drawn in self.screen(escapes=True).splitlines():
                line = SGR.sub("", drawn).rstrip()
                if line.startswith(head) and len(line) > len(head):
                    return line[len(head):], drawn
            time.sleep(0.02)
        return None

    def steady_ghost(self, head: str, timeout_s: float = 60) -> tuple[str, str]:
        """The ghost text after `head` and its drawn line, once unchanged for a second (a
        suggestion finished in the background replaces a first one)."""
        last = self.ghost(head, timeout_s=1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(1)
            now = self.ghost(head, timeout_s=1)
            if now is not None and now == last:
                return now
            last = now
        raise AssertionError(f"the ghost text did not settle:\n{self.screen()}")


@pytest.mark.parametrize("engine", ["fake", pytest.param("model", marks=pytest.mark.model)])
def test_ghost_text_is_drawn_on_a_terminal_screen(tmp_path: Path, cut_line: Edit,
                                                  engine: str,
                                                  request: pytest.FixtureRequest) -> None:
    """`emacs -nw` in tmux: a typed space brings a suggestion drawn after the cursor in
    another colour than the text; TAB turns it into text; C-x C-s saves it."""
    require_editor(None if TMUX else "no tmux: scripts/install.sh installs it")
    assert EMACS is not None
    if engine == "fake":
        command, wait_s = server_command(tmp_path, "--engine", "fake"), 15.0
    else:
        model = request.getfixturevalue("model_path")
        command = server_command(tmp_path, "--model", str(model), "--n-threads", "2")
        wait_s = 150.0
    ready = tmp_path / "ready.json"
    env = emacs_env(tmp_path, CLIENT="eglot", CMD=json.dumps(command), RESULT=str(ready),
                    FILE=str(cut_line.path), LINE=str(cut_line.line), COL=str(cut_line.col),
                    INTERACTIVE="1")
    terminal = Terminal(tmp_path)
    variables = [f"{name}={value}" for name, value in env.items()
                 if name.startswith("FLASHLS_EMACS_") or name == "HOME"]
    try:
        terminal.tmux("new-session", "-d", "-s", "emacs", "-x", "120", "-y", "40", shlex.join(
            ["env", "TERM=xterm-256color", *variables, EMACS, "-nw", "-q", "-l", str(DRIVER)]))
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), f"flashls did not start under eglot:\n{terminal.screen()}"
        head = cut_line.original[cut_line.line - 1] + " "
        started = time.monotonic()
        terminal.tmux("send-keys", "-t", "emacs", "Space")
        assert terminal.ghost(head, timeout_s=wait_s), (
            f"no ghost text on screen:\n{terminal.screen()}")
        appeared_ms = (time.monotonic() - started) * 1000
        ghost, coloured = terminal.steady_ghost(head)
        if engine == "fake":
            assert ghost == fake_middle(head).splitlines()[0]
        ghost_sgr = sgr_at(coloured, len(head))
        assert ghost_sgr, f"the ghost text is drawn like the text before it: {coloured!r}"
        cursor = terminal.tmux("display-message", "-p", "-t", "emacs", "#{cursor_x}")
        assert int(cursor) == len(head), "the cursor is not where typing goes"
        print(f"tmux ({engine}): ghost text on screen {appeared_ms:.0f} ms after the key: "
              f"{ghost!r}, drawn after {ghost_sgr!r}")
        terminal.tmux("send-keys", "-t", "emacs", "Tab")
        terminal.tmux("send-keys", "-t", "emacs", "C-x", "C-s")
        deadline = time.monotonic() + 10
        while saved_line(cut_line) != head + ghost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert saved_line(cut_line) == head + ghost, "TAB and C-x C-s did not save it"
        # (Another suggestion may show after the accepted text by now.)
        accepted = next(line for line in terminal.screen(escapes=True).splitlines()
                        if SGR.sub("", line).startswith(head + ghost))
        assert sgr_at(accepted, len(head)) != ghost_sgr, (
            f"the accepted text is still drawn as ghost text: {accepted!r}")
    finally:
        terminal.close()
    assert_no_leftovers(tmp_path)
