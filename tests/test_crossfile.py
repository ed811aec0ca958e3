"""Tests of context from other files: definitions, the index, imports, the selection that
goes into the prompt, recent places, the ring buffer and the workspace walk."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from flashls.context.crossfile import (
    CrossFileContext,
    Imports,
    Ring,
    find_imports,
    select_definitions,
)
from flashls.context.definitions import Definition, DefinitionIndex, parse_source
from flashls.context.syntax import SyntaxTrees
from flashls.context.workspace import WorkspaceIndexer, read_regular_file, source_files
from tests.test_context import SWALLOWED

SHAPES = textwrap.dedent('''\
    """Shapes."""
    import math

    UNIT = 1.0
    _cache = {}


    class Circle(Shape):
        """A round shape.

        Long explanation that is not needed.
        More of it.
        """

        def __init__(self, radius: float,
                     centre: tuple[float, float] = (0, 0)) -> None:
            """Make a circle of `radius` around `centre`."""
            self.radius = radius

        @property
        def area(self) -> float:
            return math.pi * self.radius ** 2


    @functools.cache
    def scale(shape,
              factor: float):
        # not part of the header
        return shape
''')


def parse_definitions(key: str, language_id: str, text: str) -> list[Definition]:
    """A file's top-level definitions (no usage lines)."""
    return list(parse_source(key, language_id, text, usages=False).definitions)


def _tree(text: str, uri: str = "file:///p/user.py"):  # type: ignore[no-untyped-def]
    return SyntaxTrees().update(uri, "python", text)


def test_a_class_shows_its_header_docstring_opening_and_method_headers() -> None:
    found = {d.name: d for d in parse_definitions("file:///p/shapes.py", "python", SHAPES)}
    assert set(found) == {"UNIT", "_cache", "Circle", "scale"}
    circle = found["Circle"].text
    assert circle.startswith("class Circle(Shape):\n    \"\"\"A round shape.")
    assert "Long explanation" in circle and "More of it" not in circle  # three lines
    assert "    def __init__(self, radius: float,\n                 centre:" in circle
    assert "Make a circle" in circle  # the first method's docstring is the API
    assert "    def area(self) -> float:" in circle
    assert "self.radius = radius" not in circle and "math.pi" not in circle
    scale = found["scale"]
    assert scale.text == "def scale(shape,\n          factor: float):"
    assert scale.line == SHAPES.splitlines().index("@functools.cache")
    assert found["UNIT"].text == "UNIT = 1.0"


def test_other_languages_give_their_top_level_definitions() -> None:
    source = ("export function area(r) {\n  return r * r;\n}\n"
              "class Box {\n  size() { return 1; }\n}\n")
    found = {d.name: d.text for d in parse_definitions("file:///p/a.js", "javascript", source)}
    assert found == {"area": "export function area(r) {",
                     "Box": "class Box {\n  size() { return 1; }"}
    assert parse_definitions("file:///p/a.txt", "plaintext", "x = 1") == []


def test_the_index_replaces_a_file_as_a_whole_and_keeps_open_text_over_disk_text() -> None:
    index = DefinitionIndex()
    index.replace("a", parse_definitions("a", "python", "def f():\n    pass\ndef g(): pass\n"))
    index.replace("b", parse_definitions("b", "python", "def f(x): pass\n"))
    assert [d.key for d in index.find("f")] == ["a", "b"]
    index.replace("a", parse_definitions("a", "python", "def h(): pass\n"))
    assert [d.key for d in index.find("f")] == ["b"] and index.find("g") == []
    assert not index.add_if_absent("a", parse_definitions("a", "python", "def f(): pass\n"))
    assert [d.name for d in index.of_file("a")] == ["h"]
    index.remove("b")
    assert index.find("f") == [] and index.counts()[:2] == (1, 1)


def test_python_imports_name_their_modules() -> None:
    text = textwrap.dedent("""\
        import os.path, json as j
        from .shapes import Circle, scale as grow
        from . import geometry
        from pkg.units import (UNIT,
            METRE)
        x = 1
        """)
    imports = find_imports(_tree(text), "python")
    assert imports.names == (("Circle", "shapes"), ("scale", "shapes"), ("geometry", ""),
                             ("UNIT", "units"), ("METRE", "units"))
    assert {"os", "path", "j", "geometry", "grow"} <= imports.modules


def _indexed(**files: str) -> DefinitionIndex:
    index = DefinitionIndex()
    for name, text in files.items():
        key = f"file:///p/{name.replace('__', '/')}.py"
        index.replace(key, parse_definitions(key, "python", textwrap.dedent(text)))
    return index


def test_the_selection_prefers_the_imported_module_and_skips_unresolvable_names() -> None:
    index = _indexed(shapes="def area(s): pass\nclass Circle: pass\n",
                     other="def area(x, y): pass\n", geometry="def norm(v): pass\n",
                     more="def norm(w): pass\n")
    imports = Imports((("area", "shapes"), ("missing", "shapes"), ("Circle", "")),
                      frozenset({"geometry"}))
    text = "r = geometry.norm(v)\nz = area(c)\n"
    chosen = select_definitions(index, "file:///p/user.py", imports, text, 1000)
    assert [(d.name, d.key) for d in chosen] == [
        ("area", "file:///p/shapes.py"), ("Circle", "file:///p/shapes.py"),
        ("norm", "file:///p/geometry.py")]
    # A name defined in two files and imported from neither is ambiguous: left out.
    assert select_definitions(index, "u", Imports((("area", ""),), frozenset()), "", 1000) == []
    # The file's own definitions are never shown to it.
    own = select_definitions(index, "file:///p/shapes.py",
                             Imports((("area", "shapes"),), frozenset()), "", 1000)
    assert [d.key for d in own] == ["file:///p/other.py"]


def test_the_selection_stays_within_its_budget_but_takes_smaller_ones_after_a_big_one() -> None:
    big = ("class Big(FirstBase, SecondBase, ThirdBase, metaclass=SomeMeta):\n"
           + "".join(f"    def m{i}(self): pass\n" for i in range(16)))
    index = _indexed(lib=big + "def small(): pass\n")
    imports = Imports((("Big", "lib"), ("small", "lib")), frozenset())
    chosen = select_definitions(index, "u", imports, "", 10)
    assert [d.name for d in chosen] == ["small"]


def test_a_tight_budget_shows_every_signature_before_any_whole_definition() -> None:
    big = ("class Big(Base):\n    \"\"\"Doc.\"\"\"\n"
           + "".join(f"    def method_{i}(self, value): pass\n" for i in range(16)))
    index = _indexed(lib=big + "def small(a, b):\n    return a\n")
    imports = Imports((("Big", "lib"), ("small", "lib")), frozenset())
    roomy = select_definitions(index, "u", imports, "", 1000)
    assert [d.text.count("\n") for d in roomy] == [17, 0]  # whole class, `def small(a, b):`
    tight = select_definitions(index, "u", imports, "", 40)
    # The class would crowd `small` out; its signature leaves room for both.
    assert [d.text for d in tight] == ["class Big(Base):", "def small(a, b):"]
    # What room is left after the signatures goes to whole definitions, most wanted first.
    assert [d.text for d in select_definitions(index, "u", imports, "", 160)][1] \
        == "def small(a, b):"


def test_imports_are_found_in_a_file_that_does_not_parse_and_inside_blocks() -> None:
    text = textwrap.dedent("""\
        import json
        try:
            from .speedups import scan
        except ImportError:
            scan = None

        def load():
            from .decoder import Decoder
            return Decoder(

        class Broken(json.
        """)
    imports = find_imports(_tree(text), "python")
    assert [name for name, _ in imports.names] == ["scan", "Decoder"]
    assert "json" in imports.modules
    assert find_imports(_tree(SWALLOWED), "python").names == (("Circle", "shapes"),)
    # A file whose syntax error swallows its top level still gives its definitions.
    index = _indexed(lib="import os\nclass Kept:\n    pass\ndef also(x):\n    return (x\n")
    assert {d.name for d in index.of_file("file:///p/lib.py")} == {"Kept", "also"}


def _context(sources: tuple[str, ...] = ("definitions",), budget: int = 500) -> CrossFileContext:
    context = CrossFileContext(sources, budget)
    context.roots = ["file:///p"]
    return context


def test_sections_follow_imports_not_the_cursor_so_typing_keeps_them() -> None:
    context = _context()
    context.document_changed("file:///p/shapes.py", "python", SHAPES)
    user = "from .shapes import Circle, UNIT\n\ndef f():\n    c = Circle(2)\n"
    first = context.sections("file:///p/user.py", "python", _tree(user), user)
    assert [s.path for s in first] == ["shapes.py"]
    assert first[0].text.startswith("UNIT = 1.0\n\nclass Circle(Shape):")  # file order
    typed = user + "    return c.ar"
    assert context.sections("file:///p/user.py", "python", _tree(typed), typed) == first
    # An edit of the other file shows once it is asked for, without a reparse per keystroke.
    context.document_changed("file:///p/shapes.py", "python", SHAPES.replace("UNIT = 1.0",
                                                                           "UNIT = 2.5"))
    again = context.sections("file:///p/user.py", "python", _tree(typed), typed)
    assert again[0].text.startswith("UNIT = 2.5")
    assert context.path_of("file:///elsewhere/x.py") == "x.py"
    assert context.repo_name() == "p"


def test_typing_along_a_line_reuses_the_chosen_definitions_until_they_may_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import flashls.context.crossfile as crossfile
    calls: list[str] = []
    select = crossfile.select_definitions

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[3])
        return select(*args, **kwargs)

    monkeypatch.setattr(crossfile, "select_definitions", counted)
    context = _context()
    context.document_changed("file:///p/shapes.py", "python", SHAPES)
    context.document_changed("file:///p/geometry.py", "python", "def norm(v): pass\n")
    head = "from .shapes import Circle\nfrom . import geometry\n\ndef f():\n"

    def ask(line_text: str, tail: str = "    return 1\n") -> tuple[str, ...]:
        text = head + line_text + "\n" + tail
        context.document_changed("file:///p/user.py", "python", text)
        cursor = len(head + line_text)  # the end of line 4, where the user types
        found = context.sections("file:///p/user.py", "python", _tree(text), text, cursor)
        return tuple(section.path for section in found)

    assert ask("    c = Ci") == ("shapes.py",)
    assert ask("    c = Cir") == ("shapes.py",) and ask("    c = Circle(2") == ("shapes.py",)
    assert len(calls) == 1  # typing along the line: chosen once
    assert ask("    c = Circle(2) + geometry.") == ("geometry.py", "shapes.py")
    assert len(calls) == 2  # `module.` on the line: its outline is wanted now
    ask("    c = Circle(2) + geometry.", tail="    return 2\n")
    assert len(calls) == 3  # the text outside the line changed
    context.document_changed("file:///p/shapes.py", "python", SHAPES + "\ndef more(): pass\n")
    ask("    c = Circle(2) + geometry.", tail="    return 2\n")
    assert len(calls) == 4  # another file changed the index


def test_recent_places_show_where_the_user_was_in_other_files_most_recent_last() -> None:
    context = _context(("recent",))
    lines = "\n".join(f"line {i}" for i in range(100))
    for name in ("a", "b", "user"):
        context.document_changed(f"file:///p/{name}.py", "python", lines)
    context.visited("file:///p/a.py", 50)
    context.visited("file:///p/b.py", 5)
    context.visited("file:///p/user.py", 3)
    sections = context.sections("file:///p/user.py", "python", None, lines)
    assert [s.path for s in sections] == ["a.py", "b.py"]
    assert sections[0].text.splitlines()[0] == "line 38" and "line 58" in sections[0].text
    small = _context(("recent",), budget=60)
    for name in ("a", "b"):
        small.document_changed(f"file:///p/{name}.py", "python", lines)
    small.visited("file:///p/a.py", 50)
    small.visited("file:///p/b.py", 5)
    assert [s.path for s in small.sections("u", "python", None, "")] == ["b.py"]
    context.document_closed("file:///p/b.py")
    assert [s.path for s in context.sections("file:///p/user.py", "python", None, "")] == [
        "a.py"]


def test_the_ring_keeps_entered_chunks_and_evicts_near_repeats() -> None:
    ring = Ring(chunks=2, lines=4)
    text = "\n".join(f"l{i}" for i in range(20))
    ring.enter("a", text, 10)
    ring.enter("b", text, 10)  # the same lines: replaces a's chunk
    assert [key for key, _ in ring.chunks()] == ["b"]
    ring.enter("c", text, 0)
    ring.enter("d", "\n".join(f"m{i}" for i in range(20)), 0)
    assert [key for key, _ in ring.chunks()] == ["c", "d"]
    assert ring.chunks()[0][1] == "l0\nl1\nl2\nl3"


def test_nothing_is_selected_when_the_sources_are_off() -> None:
    context = CrossFileContext((), 500)
    context.document_changed("file:///p/shapes.py", "python", SHAPES)
    user = "from .shapes import Circle\n"
    assert context.sections("file:///p/user.py", "python", _tree(user), user) == ()


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_workspace_walk_honours_gitignore_files_and_skips_dependency_folders(
        tmp_path: Path) -> None:
    _write(tmp_path, {
        ".gitignore": "generated/\n*.gen.py\n", "src/a.py": "def a(): pass\n",
        "src/b.gen.py": "def b(): pass\n", "generated/c.py": "def c(): pass\n",
        "src/.gitignore": "local.py\n", "src/local.py": "def d(): pass\n",
        "lib/local.py": "def e(): pass\n", "node_modules/m.js": "function m() {}\n",
        ".hidden/h.py": "def h(): pass\n", "notes.txt": "def t(): pass\n"})
    found = sorted(path.relative_to(tmp_path).as_posix() for path in source_files(tmp_path))
    assert found == ["lib/local.py", "src/a.py"]


def test_the_indexer_stops_at_its_file_limit_and_leaves_open_documents_alone(
        tmp_path: Path) -> None:
    _write(tmp_path, {f"m{i}.py": f"def f{i}(): pass\n" for i in range(5)})
    index = DefinitionIndex()
    open_key = (tmp_path / "m0.py").as_uri()
    index.replace(open_key, parse_definitions(open_key, "python", "def edited(): pass\n"))
    indexer = WorkspaceIndexer(index, max_files=3, max_bytes=1 << 20)
    indexer.start([tmp_path])
    assert indexer.join(timeout=30)
    assert indexer.stats.stopped_at_limit and indexer.stats.files == 3
    assert [d.name for d in index.of_file(open_key)] == ["edited"]
    assert index.find("f4") == []


def test_the_index_follows_folders_and_files_changing_on_disk(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _write(first, {"a.py": "def alpha(): pass\n", "open.py": "def on_disk(): pass\n"})
    _write(second, {"b.py": "def beta(): pass\n"})
    index = DefinitionIndex()
    open_key = (first / "open.py").as_uri()
    index.replace(open_key, parse_definitions(open_key, "python", "def in_editor(): pass\n"))
    indexer = WorkspaceIndexer(index, max_files=100, max_bytes=1 << 20,
                               is_open=lambda key: key == open_key)

    def names() -> list[str]:
        return sorted(d.name for key in index.files() for d in index.of_file(key))

    indexer.start([first])
    assert indexer.join(timeout=30) and names() == ["alpha", "in_editor"]
    indexer.add_roots([second])  # a folder added to the workspace
    assert indexer.join(timeout=30) and names() == ["alpha", "beta", "in_editor"]
    _write(first, {"new.py": "def gamma(): pass\n", "a.py": "def alpha2(): pass\n",
                   "open.py": "def saved_elsewhere(): pass\n"})
    for name in ("new.py", "a.py", "open.py"):
        indexer.file_changed(first / name, deleted=False)
    indexer.file_changed(tmp_path / "outside.py", deleted=False)  # not in the workspace
    assert indexer.join(timeout=30)
    assert names() == ["alpha2", "beta", "gamma", "in_editor"]
    (first / "new.py").unlink()
    indexer.file_changed(first / "new.py", deleted=True)
    indexer.file_changed(first / "open.py", deleted=True)  # open: the editor's text stays
    indexer.remove_roots([second])
    assert indexer.join(timeout=30) and names() == ["alpha2", "in_editor"]
    indexer.stop()
    assert indexer.join(timeout=5)


@pytest.mark.parametrize("budget", [0])
def test_a_zero_budget_turns_cross_file_context_off(budget: int) -> None:
    assert not CrossFileContext(("definitions",), budget).enabled


def test_opening_a_document_enters_its_top_into_the_ring() -> None:
    context = _context(("ring",))
    context.document_changed("file:///p/a.py", "python", "import os\n\ndef f(): pass\n")
    context.entered("file:///p/a.py", 0)
    sections = context.sections("file:///p/user.py", "python", None, "")
    assert [(s.path, s.text.splitlines()[0]) for s in sections] == [("a.py", "import os")]


def test_bench_index_reports_the_files_definitions_and_memory_of_a_walk(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flashls.cli import main

    _write(tmp_path / "tree", {f"pkg/m{i}.py": f"def f{i}(): pass\nX{i} = f{i}()\n"
                               for i in range(12)})
    assert main(["bench", "index", "--root", str(tmp_path / "tree"), "--max-files", "10",
                 "--out", str(tmp_path / "out")]) == 0
    [report] = (tmp_path / "out").glob("index-*.json")
    payload = json.loads(report.read_text())
    assert (payload["files_indexed"], payload["definitions"], payload["usages"]) == (10, 20, 20)
    assert payload["stopped_at_limit"] and payload["heap_mb"] >= 0
    assert main(["bench", "index", "--root", str(tmp_path / "missing")]) == 1


def test_a_module_used_as_module_dot_offers_the_first_lines_of_its_names_public_first() -> None:
    index = _indexed(events="def get_loop():\n    pass\ndef _hidden(): pass\n"
                            "class Event:\n    def set(self): pass\n",
                     other="def get_loop(x): pass\n")
    imports = Imports((("events", ""),), frozenset({"events"}))
    chosen = select_definitions(index, "file:///p/user.py", imports, "loop = events.", 1000)
    assert [(d.name, d.text) for d in chosen] == [("get_loop", "def get_loop():"),
                                                  ("Event", "class Event:"),
                                                  ("_hidden", "def _hidden(): pass")]
    # `preevents.` is not a use of `events`; `pkg.events.` is.
    assert select_definitions(index, "file:///p/user.py", imports, "x = preevents.", 1000) \
        == []
    assert len(select_definitions(index, "file:///p/user.py", imports, "x = pkg.events.",
                                  1000)) == 3


def test_a_ring_chunk_larger_than_the_budget_is_cut_to_its_first_lines() -> None:
    context = _context(("ring",), budget=40)
    context.document_changed("file:///p/a.py", "python",
                             "\n".join(f"value_{i} = {i}" for i in range(64)))
    context.entered("file:///p/a.py", 0)
    [section] = context.sections("file:///p/user.py", "python", None, "")
    assert section.text.startswith("value_0 = 0\n") and 8 <= section.text.count("\n") < 63


def test_the_index_reads_only_regular_files_inside_the_workspace(tmp_path: Path) -> None:
    """A FIFO named like source is never waited on; a link out of the folder, to a file
    or a folder, is not followed; the index completes."""
    import os
    import socket

    project, outside = tmp_path / "project", tmp_path / "outside"
    _write(project, {"a.py": "def alpha(): pass\n"})
    _write(outside, {"private.py": "def private_helper(): pass\n"})
    os.mkfifo(project / "x.py")
    (project / "linked.py").symlink_to(outside / "private.py")
    (project / "linked_folder").symlink_to(outside)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(project / "s.py"))
    index = DefinitionIndex()
    indexer = WorkspaceIndexer(index, max_files=100, max_bytes=1 << 20)
    indexer.start([project])
    try:
        assert indexer.join(timeout=30)  # not stuck on the FIFO
        names = sorted(d.name for key in index.files() for d in index.of_file(key))
        assert names == ["alpha"]
        indexer.file_changed(project / "linked.py", deleted=False)
        assert indexer.join(timeout=30) and index.find("private_helper") == []
    finally:
        indexer.stop()
        listener.close()


def test_only_regular_files_are_read_and_none_is_waited_on(tmp_path: Path) -> None:
    """A device or a FIFO is refused after a non-blocking open, before any read: /dev/zero
    would never end, a FIFO with no writer would block the open itself."""
    import os

    os.mkfifo(tmp_path / "pipe.py")
    (tmp_path / "big.py").write_text("x = 1\n" * 100)
    (tmp_path / "small.py").write_text("x = 1\n")
    assert read_regular_file(Path("/dev/zero"), 1024) is None
    assert read_regular_file(tmp_path / "pipe.py", 1024) is None
    assert read_regular_file(tmp_path / "big.py", 100) is None  # over the limit
    assert read_regular_file(tmp_path / "small.py", 100) == ("x = 1\n", 6)


def test_the_index_refuses_the_whole_disk_and_home(tmp_path: Path) -> None:
    index = DefinitionIndex()
    indexer = WorkspaceIndexer(index, max_files=100, max_bytes=1 << 20)
    indexer.start([Path("/"), Path.home(), Path("/proc/self")])
    assert indexer.join(timeout=30)
    assert index.files() == [] and indexer.stats.files == 0
    indexer.stop()
