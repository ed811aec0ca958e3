"""What the editor tests (Neovim, Emacs) share: a file with one line cut short, and the
check of what accepting a suggestion put at the cursor."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(colorsys.__file__)
LINE_TO_CUT = "    y = 0.30*r + 0.59*g + 0.11*b"


@dataclass
class Edit:
    """A copy of a file, its lines as written, and where to type."""

    path: Path
    original: list[str]  # the file as written before the editor opened it
    line: int  # 1-based
    col: int  # 0-based column of the cursor (ASCII line: bytes and characters agree)


def cut_colorsys(directory: Path) -> Edit:
    """colorsys.py in `directory`, its `y = 0.30*r + ...` line stopped after the first `+`."""
    lines = SOURCE.read_text(encoding="utf-8").splitlines()
    index = lines.index(LINE_TO_CUT)
    lines[index] = LINE_TO_CUT[:LINE_TO_CUT.index("+") + 1]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "colorsys.py"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Edit(path, lines, index + 1, len(lines[index]))


def inserted_at_cursor(edit: Edit, after: list[str]) -> str:
    """What went in at the edit's cursor, given the buffer's lines `after`; asserts that
    nothing else changed."""
    before, row = edit.original, edit.line - 1
    head, tail = before[row][:edit.col], before[row][edit.col:]
    added = len(after) - len(before)
    assert after[:row] == before[:row], "lines above the cursor changed"
    assert after[row + added + 1:] == before[row + 1:], "lines below the cursor changed"
    changed = "\n".join(after[row:row + added + 1])
    assert changed.startswith(head) and changed.endswith(tail), changed
    return changed[len(head):len(changed) - len(tail)]
