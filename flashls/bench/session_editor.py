"""Editor profiles for `flashls bench session`: what VS Code and Neovim send, and when,
while a user lands at a place, reads, deletes a line's tail and types its start again.

- `vscode`: a request after every edit, each cancelling the one before (VS Code asks
  when the text changes, not when the cursor moves: the e2e test's logs show none).
- `neovim`: Neovim 0.12's own `vim.lsp.inline_completion` (the plugin's `builtin` mode):
  a request only once 200 ms pass without an edit.
- `neovim-live`: the flashls plugin's default `live` mode (`editors/nvim/lua/flashls/
  ghost.lua`): a request on entering insert mode and after every typed character, each
  keystroke cancelling the pending one.

`schedule` turns one visit into timed actions; it keeps no clock and sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashls.bench.session_plan import Visit

EDITORS = ("vscode", "neovim", "neovim-live")
NEOVIM_DEBOUNCE_MS = 200.0  # vim.lsp.inline_completion waits this long after an event
CURSOR_REST_MS = 500.0  # didFocus is sent again once the cursor has rested this long

# Action kinds, in the order they run when they fall on the same millisecond.
FOCUS = "focus"  # textDocument/didFocus at the cursor
DELETE = "delete"  # didChange removing the line's tail (neovim: `C`, entering insert mode)
TYPE = "type"  # didChange inserting one character
REQUEST = "request"  # textDocument/inlineCompletion at the cursor
END = "end"  # the user moves on: pending requests are cancelled
PASTE = "paste"  # didChange putting back what was not typed, as the user leaves (no request)
_ORDER = {FOCUS: 0, DELETE: 1, TYPE: 1, REQUEST: 2, END: 3, PASTE: 4}


@dataclass(frozen=True)
class Timing:
    """The user's pace."""

    read_ms: float = 2000.0  # from landing at the place to deleting the tail
    interval_ms: float = 150.0  # between the deletion and each typed character
    linger_ms: float = 1000.0  # from the last character to moving on


@dataclass(frozen=True)
class Action:
    """Something the editor does `at_ms` after landing at the place.

    `typed` is the number of re-typed characters once the action has happened: -1 before
    the deletion, 0 right after it. For TYPE it is the character's 1-based number.
    """

    at_ms: float
    kind: str
    typed: int


def edit_times(visit: Visit, timing: Timing) -> list[float]:
    """When the deletion (first) and each typed character happen, from landing."""
    return [timing.read_ms + k * timing.interval_ms for k in range(visit.typed_chars + 1)]


def end_time(visit: Visit, timing: Timing) -> float:
    """When the user leaves the place."""
    return edit_times(visit, timing)[-1] + timing.linger_ms


def schedule(visit: Visit, timing: Timing, editor: str, focus: bool) -> list[Action]:
    """Every action of one visit for one editor profile, in the order they happen."""
    edits = edit_times(visit, timing)
    end = end_time(visit, timing)
    actions = [Action(edits[0], DELETE, 0)]
    actions += [Action(at, TYPE, typed) for typed, at in enumerate(edits) if typed > 0]
    if focus:
        actions += _focus_actions(edits, end)
    if editor == "vscode":
        actions += _vscode_requests(edits)
    elif editor == "neovim":
        actions += _neovim_requests(edits, end)
    elif editor == "neovim-live":
        actions += [Action(at, REQUEST, typed) for typed, at in enumerate(edits)]
    else:
        raise ValueError(f"unknown editor profile {editor!r}")
    actions += [Action(end, END, len(edits) - 1), Action(end, PASTE, len(edits) - 1)]
    return sorted(actions, key=lambda action: (action.at_ms, _ORDER[action.kind]))


def _focus_actions(edits: list[float], end: float) -> list[Action]:
    """On landing, and whenever the cursor has then rested CURSOR_REST_MS (while reading,
    and after the last character)."""
    actions = [Action(0.0, FOCUS, -1)]
    if edits[0] > CURSOR_REST_MS:
        actions.append(Action(CURSOR_REST_MS, FOCUS, -1))
    if edits[-1] + CURSOR_REST_MS < end:
        actions.append(Action(edits[-1] + CURSOR_REST_MS, FOCUS, len(edits) - 1))
    return actions


def _vscode_requests(edits: list[float]) -> list[Action]:
    """After every edit; each new request cancels the pending one."""
    return [Action(at, REQUEST, typed) for typed, at in enumerate(edits)]


def _neovim_requests(edits: list[float], end: float) -> list[Action]:
    """InsertEnter (the deletion), TextChangedI and CursorMovedI (each character) start a
    NEOVIM_DEBOUNCE_MS timer; a request goes out only when it runs out before the next edit
    and before the user moves on."""
    requests = []
    for typed, at in enumerate(edits):
        fires = at + NEOVIM_DEBOUNCE_MS
        next_edit = edits[typed + 1] if typed + 1 < len(edits) else end
        if fires < next_edit:
            requests.append(Action(fires, REQUEST, typed))
    return requests


def cancels_on_keystroke(editor: str) -> bool:
    """Whether a keystroke itself cancels the pending request (Neovim), rather than the
    next request (VS Code, whose next request follows the keystroke at once)."""
    return editor in ("neovim", "neovim-live")
