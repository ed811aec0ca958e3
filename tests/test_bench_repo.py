"""Tests of `flashls bench repo`: cross-file sites in a small project written here (imports
relative, absolute, aliased, of modules and of names), the masking, the open files, the
scores, the default projects, the plain-FIM baseline's prompt and answers, a run on
`flashls serve --engine fake` beside a stand-in llama-server, and one on the real model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import stat
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flashls.bench.harness import BenchError
from flashls.bench.repo import (
    DEFAULT_VARIANTS,
    FIXED_SERVER_ARGS,
    RepoConfig,
    add_arguments,
    fim_answer,
    fim_server,
    parse_variant,
    project_roots,
    server_command,
)
from flashls.bench.repo_fim import (
    PLAIN_FIM,
    PREFIX_BUDGET_TOKENS,
    SUFFIX_BUDGET_TOKENS,
    FimReply,
    first_lines,
    last_lines,
    site_prompt,
    split_at_cursor,
)
from flashls.bench.repo_metrics import (
    edit_similarity,
    identifier_f1,
    identifiers,
    levenshtein,
    score,
    summarize,
)
from flashls.bench.repo_sites import (
    HELD_OUT_PROJECTS,
    Site,
    auto_closed,
    default_projects,
    find_sites,
    line_before_cursor,
    load_project,
    masked_document,
    module_name,
    open_files,
    sample_sites,
)
from flashls.bench.trace import split_lines
from flashls.cli import main

FILES = {
    "__init__.py": '''\
        """A toy package."""
        from .core import Engine

        DEFAULT = Engine()
        ''',
    "utils.py": '''\
        """Helpers."""
        import os


        def quote(text):
            return '"' + text + '"'


        LIMIT = 10
        SEPARATOR, JOINER = os.sep, "-"


        class Box:
            pass
        ''',
    "core.py": '''\
        """The core, using helpers from utils in every way a module can import them."""
        from os import path

        from . import utils
        from .utils import LIMIT as CAP
        from .utils import missing_name, quote
        from toy.utils import Box
        import toy.utils


        def run(text):
            # quote(text) in a comment is not a use
            label = "quote(text) in a string is not one either"
            boxed = Box()
            value = quote(text) + missing_name
            size = utils.LIMIT + CAP
            other = toy.utils.quote(text)
            noted = quote(text)  # a trailing comment: left out
            mark = "\N{GRINNING FACE}é" + quote(text)
            gone = missing_name
            utils.JOINER = "+"
            return path.join(value, label, boxed, size, other, noted, mark, gone, utils.missing)


        class Engine:
            pass
        ''',
    "shadow.py": '''\
        from .utils import quote


        def wrap(quote):
            return quote(1)
        ''',
    "tests/test_core.py": '''\
        from toy.utils import quote

        QUOTED = quote("x")
        ''',
}


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    load_project.cache_clear()
    return root


def _sites(root: Path) -> list[tuple[str, str, str, str]]:
    return [(Path(site.path).name, site.name, site.target, Path(site.defined_in).name)
            for site in find_sites(str(root))]


def test_modules_are_named_from_the_projects_parent(toy: Path) -> None:
    assert module_name(str(toy), str(toy / "core.py")) == "toy.core"
    assert module_name(str(toy), str(toy / "__init__.py")) == "toy"
    project = load_project(str(toy))
    assert sorted(project.modules) == ["toy", "toy.core", "toy.shadow", "toy.utils"]
    assert project.modules["toy.utils"].definitions == {"quote", "LIMIT", "SEPARATOR",
                                                        "JOINER", "Box"}


def test_sites_are_loads_of_names_defined_in_another_file_of_the_project(toy: Path) -> None:
    assert _sites(toy) == [
        ("__init__.py", "Engine", "Engine()", "core.py"),
        ("core.py", "Box", "Box()", "utils.py"),
        ("core.py", "quote", "quote(text) + missing_name", "utils.py"),
        ("core.py", "LIMIT", "LIMIT + CAP", "utils.py"),  # after `utils.`, not before it
        ("core.py", "quote", "quote(text)", "utils.py"),  # toy.utils.quote
        ("core.py", "quote", "quote(text)", "utils.py"),  # after non-ASCII text
    ]
    # Not sites: comments, strings, the trailing-comment line, `utils.JOINER = ...` (a
    # store), `missing_name` (not defined in utils), `path` (not the project's), `shadow.py`
    # (its parameter hides the import), and tests/.


def test_the_cursor_is_in_utf16_units_before_the_name(toy: Path) -> None:
    sites = find_sites(str(toy))
    lines = split_lines((toy / "core.py").read_text(encoding="utf-8"))
    mark = next(site for site in sites if "\N{GRINNING FACE}" in lines[site.line])
    before = lines[mark.line][:lines[mark.line].index("quote")]
    assert mark.character == len(before) + 1  # the emoji takes two UTF-16 units
    size = next(site for site in sites if site.name == "LIMIT")
    assert lines[size.line][size.character:].startswith("LIMIT + CAP")


def test_the_masked_document_is_the_file_without_the_rest_of_the_line(toy: Path) -> None:
    for site in find_sites(str(toy)):
        original = split_lines(Path(site.path).read_text(encoding="utf-8"))
        masked = split_lines(masked_document(site))
        assert masked[:site.line] == original[:site.line]
        assert masked[site.line + 1:] == original[site.line + 1:]
        assert masked[site.line].rstrip("\n") + site.target == original[site.line].rstrip("\n")
        assert line_before_cursor(site) == masked[site.line].rstrip("\n")


def test_an_auto_closed_site_has_the_cursor_in_the_call_and_its_paren_after(
        toy: Path) -> None:
    sites = {(site.name, site.target): site for site in find_sites(str(toy))}
    value = auto_closed(sites["quote", "quote(text) + missing_name"])
    assert value is not None
    assert (value.target, value.suffix, value.rest) == ("text", ")", "text) + missing_name")
    assert line_before_cursor(value) == "    value = quote("
    masked = split_lines(masked_document(value))[value.line]
    assert masked == "    value = quote()\n"
    assert value.character == sites["quote", "quote(text) + missing_name"].character + 6
    assert auto_closed(sites["Box", "Box()"]) is None  # no arguments to write
    assert auto_closed(sites["LIMIT", "LIMIT + CAP"]) is None  # no call


def test_crlf_files_keep_their_line_endings(tmp_path: Path) -> None:
    root = tmp_path / "crlf"
    root.mkdir()
    (root / "a.py").write_bytes(b"VALUE = 1\r\n")
    (root / "b.py").write_bytes(b"from .a import VALUE\r\nDOUBLE = VALUE * 2\r\nEND = 0\r\n")
    load_project.cache_clear()
    [site] = find_sites(str(root))
    assert (site.line, site.character, site.target) == (1, 9, "VALUE * 2")
    assert masked_document(site).encode() == b"from .a import VALUE\r\nDOUBLE = \r\nEND = 0\r\n"


def test_a_checkout_is_imported_by_its_packages_names(tmp_path: Path) -> None:
    package = tmp_path / "checkout" / "src" / "shop"
    package.mkdir(parents=True)
    (tmp_path / "checkout" / "setup.py").write_text("import shop.cart\n", encoding="utf-8")
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "cart.py").write_text("def total(items):\n    return 0\n", encoding="utf-8")
    (package / "till.py").write_text(
        "import shop.cart\nfrom shop.cart import total as sum_of\n\n"
        "PAID = sum_of([]) + shop.cart.total([])\n", encoding="utf-8")
    load_project.cache_clear()
    sites = find_sites(str(tmp_path / "checkout"))
    assert [(Path(site.path).name, site.line, site.target, site.defining_module)
            for site in sites] == [("till.py", 3, "sum_of([]) + shop.cart.total([])",
                                    "checkout.src.shop.cart")]


def test_open_files_are_seeded_other_files_half_of_them_imported(toy: Path) -> None:
    site = next(site for site in find_sites(str(toy)) if site.path.endswith("core.py"))
    chosen = open_files(site, 2, seed=3)
    assert chosen == open_files(site, 2, seed=3)
    assert len(chosen) == 2 and site.path not in chosen
    assert str(toy / "utils.py") in chosen  # the only module core imports
    everything = open_files(site, 10, seed=3)
    assert sorted(everything) == sorted(str(toy / name)
                                        for name in ("__init__.py", "utils.py", "shadow.py"))
    assert open_files(site, 0) == []


def test_sampling_is_seeded_and_spreads_over_files(toy: Path) -> None:
    first = sample_sites([str(toy)], 3, seed=1, per_file_max=2)
    assert first == sample_sites([str(toy)], 3, seed=1, per_file_max=2)
    assert len(first) == 3
    assert {Path(site.path).name for site in first} == {"__init__.py", "core.py"}
    assert len(sample_sites([str(toy)], 100, seed=1, per_file_max=2)) == 3
    assert len(sample_sites([str(toy)], 100, seed=1, per_project_max=2)) == 2


def test_the_default_projects_are_installed_packages_outside_the_standard_library() -> None:
    roots = [Path(root) for root in default_projects()]
    assert [root.name for root in roots] == list(HELD_OUT_PROJECTS)  # flashls depends on all
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    site_packages = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    for root in roots:
        assert (root / "__init__.py").is_file()
        assert root.parent in site_packages and root.parent != stdlib
        assert root.name not in sys.stdlib_module_names
    assert [Path(root).name for root in default_projects("stdlib")][:2] == ["email", "asyncio"]


@pytest.mark.parametrize("project_set", ["held-out", "stdlib"])
def test_each_project_set_gives_300_sites_from_several_projects(project_set: str) -> None:
    sites = sample_sites(default_projects(project_set), 300, seed=0)
    projects: dict[str, int] = {}
    for site in sites:
        projects[site.project] = projects.get(site.project, 0) + 1
    assert len(sites) == 300
    assert sum(count >= 20 for count in projects.values()) >= 3, projects
    assert all(site.target.startswith(site.name) for site in sites)


def test_repo_replaces_the_default_projects_unless_a_set_is_asked_for(toy: Path) -> None:
    assert project_roots(RepoConfig(repos=(str(toy),), projects="")) == [str(toy)]
    both = project_roots(RepoConfig(repos=(str(toy),), projects="stdlib"))
    assert both == [str(toy), *default_projects("stdlib")]
    with pytest.raises(BenchError, match="not a directory"):
        project_roots(RepoConfig(repos=(str(toy / "missing"),)))


# Scores


def test_levenshtein_and_edit_similarity_by_hand() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("", "") == 1.0 and edit_similarity("", "ab") == 0.0


def test_identifiers_leave_out_keywords_and_pieces_of_numbers() -> None:
    assert identifiers("not self.x1 in 0x1f and _y") == ["self", "x1", "_y"]


def test_scores_of_a_completion_against_its_target() -> None:
    exact = score("quote(text)  \nmore", "quote(text)")
    assert (exact.exact_match, exact.first_line_match, exact.edit_similarity,
            exact.identifier_match, exact.identifier_f1) == (True, True, 1.0, True, 1.0)
    spaced = score("quote( text )", "quote( text  )")
    assert spaced.exact_match and not spaced.first_line_match
    near = score("quote(name)", "quote(text)")
    assert not near.exact_match and not near.identifier_match
    assert near.edit_similarity == pytest.approx(1 - 4 / 11)
    assert near.identifier_f1 == pytest.approx(0.5)  # one of two right, both ways
    assert identifier_f1(["a", "a", "b"], ["a", "b", "c"]) == pytest.approx(2 / 3)
    empty = score("", "Box()")
    assert (empty.exact_match, empty.edit_similarity, empty.identifier_f1) == (False, 0.0, 0.0)


def test_summary_means_and_percentiles() -> None:
    scores = [score("a", "a"), score("b", "a")]
    summary = summarize(scores, [100.0, 200.0, 300.0], [10.0, 30.0])
    assert summary["scored"] == 2 and summary["exact_match"] == 0.5
    assert summary["latency_ms"]["p50"] == 200.0 and summary["latency_ms"]["p90"] == 280.0
    assert summary["prompt_tokens"] == {"p50": 20.0, "p90": 28.0}
    assert summarize([], [], [])["exact_match"] is None


# The plain-FIM baseline


async def _words(text: str) -> int:
    """A stand-in tokenizer: a token a whitespace-separated word."""
    return len(text.split())


FILLER = "".join(f"FILLER_{index} = {index}\n" for index in range(600))  # 3 words a line


@pytest.fixture
def long_site(tmp_path: Path) -> Site:
    """The one site of a file with 1,800 words of filler before it and after it."""
    root = tmp_path / "long"
    root.mkdir()
    (root / "a.py").write_text("VALUE = 1\n", encoding="utf-8")
    (root / "b.py").write_text(f"from .a import VALUE\n{FILLER}DOUBLE = VALUE.scale(2, 3)\n"
                               f"{FILLER}", encoding="utf-8")
    load_project.cache_clear()
    [site] = find_sites(str(root))
    return site


def _parts(prompt: str) -> tuple[str, str]:
    start, hole, end = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"  # Qwen2.5-Coder's
    assert prompt.startswith(start) and prompt.endswith(end)
    prefix, suffix = prompt[len(start):-len(end)].split(hole)
    return prefix, suffix


async def test_the_fim_window_is_whole_lines_within_the_token_budgets(
        long_site: Site) -> None:
    before, after = split_at_cursor(long_site)
    assert before.endswith("\nDOUBLE = ") and after.startswith("\nFILLER_0 = 0\n")
    prefix, suffix = _parts(await site_prompt(long_site, _words))
    # The prefix: the cursor's line and the most whole lines above it that fit.
    assert before.endswith(prefix) and before[:-len(prefix)].endswith("\n")
    assert PREFIX_BUDGET_TOKENS - 3 < await _words(prefix) <= PREFIX_BUDGET_TOKENS
    # The suffix: the rest of the cursor's line (nothing) and the most whole lines below.
    assert after.startswith(suffix) and suffix.endswith("\n")
    assert SUFFIX_BUDGET_TOKENS - 3 < await _words(suffix) <= SUFFIX_BUDGET_TOKENS


async def test_an_auto_closed_sites_suffix_starts_with_its_closing_paren(
        long_site: Site) -> None:
    closed = auto_closed(long_site)
    assert closed is not None
    prefix, suffix = _parts(await site_prompt(closed, _words))
    assert prefix.endswith("\nDOUBLE = VALUE.scale(") and suffix.startswith(")\nFILLER_0 = 0\n")


async def test_a_window_that_fits_is_kept_whole_and_a_line_is_never_cut() -> None:
    text = "a b\nc d\ne"
    assert await last_lines(text, 100, _words) == await first_lines(text, 100, _words) == text
    assert await last_lines(text, 3, _words) == "c d\ne"
    assert await first_lines(text, 3, _words) == "a b\n"
    assert await last_lines(text, 0, _words) == "e"  # the cursor's line, however long
    assert await first_lines(text, 0, _words) == "a b\n"
    assert await last_lines("", 5, _words) == await first_lines("", 5, _words) == ""


def test_the_fim_suggestion_is_the_answers_first_line_uncleaned(long_site: Site) -> None:
    def line_and_exact(content: str) -> tuple[str, bool]:
        answer = fim_answer(long_site, FimReply("answered", content, 10.0))
        assert answer.score is not None
        return answer.line, answer.score.exact_match

    assert line_and_exact("VALUE.scale(2, 3)\nmore = 1\n") == ("VALUE.scale(2, 3)", True)
    # No comment dropped, no leading newline skipped, nothing closed or trimmed.
    assert line_and_exact("VALUE.scale(2, 3)  # twice\n") == (
        "VALUE.scale(2, 3)  # twice", False)
    assert line_and_exact("\nVALUE.scale(2, 3)\n") == ("", False)
    assert line_and_exact("VALUE.scale(2, 3") == ("VALUE.scale(2, 3", False)
    timeout = fim_answer(long_site, FimReply("timeout"))
    assert timeout.outcome == "timeout" and timeout.score is not None
    assert not timeout.score.exact_match
    closed = auto_closed(long_site)
    assert closed is not None  # the editor's `)` after the cursor: what over-closes counts
    assert fim_answer(closed, FimReply("answered", "2, 3)\n")).over_closed is True
    assert fim_answer(closed, FimReply("answered", "2, 3\n")).over_closed is False


STAND_IN_LLAMA_SERVER = '''\
# A stand-in llama-server: its flags, /health, /tokenize (a token a word) and /completion
# (always `quote(text)` and a second line); its arguments and requests logged as JSON lines.
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def log(record):
    with open(os.environ["STAND_IN_LOG"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\\n")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.reply({"status": "ok"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        log({"path": self.path, "body": body})
        if self.path == "/tokenize":
            self.reply({"tokens": list(range(len(body["content"].split())))})
            return
        self.reply({"content": "quote(text)\\n    return 1\\n", "stop_type": "eos",
                    "tokens_evaluated": len(body["prompt"].split()),
                    "timings": {"prompt_n": 5, "prompt_ms": 1.5, "predicted_n": 6,
                                "predicted_ms": 2.5}})

    def reply(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


log({"argv": sys.argv[1:]})
HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Handler).serve_forever()
'''


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An executable stand-in llama-server, and the log of what it was asked."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN_LLAMA_SERVER, encoding="utf-8")
    binary = tmp_path / "llama-server"
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n', encoding="utf-8")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "stand_in.jsonl"
    monkeypatch.setenv("STAND_IN_LOG", str(log))
    return binary, log


def _site(record: dict[str, Any]) -> Site:
    return Site(**{name: record[name] for name in Site.__dataclass_fields__})


def test_plain_fim_runs_beside_the_flashls_variants_scored_the_same_way(
        toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        stand_in: tuple[Path, Path]) -> None:
    binary, log = stand_in
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    payload, printed = _run_printed(
        tmp_path, capsys, toy, "--sites", "6", "--server-arg=--engine", "--server-arg=fake",
        "--variant", "plain-fim", "--llama-server-binary", str(binary), "--model", str(model),
        "--fim-threads", "3")
    assert list(payload["summary"]) == ["current", PLAIN_FIM]
    summary = payload["summary"][PLAIN_FIM]
    assert summary["outcomes"] == {"answered": 6} and summary["scored"] == 6
    for site in payload["sites"]:
        answer = site["answers"][PLAIN_FIM]
        assert answer["line"] == "quote(text)"
        assert answer["score"]["exact_match"] == (site["target"] == "quote(text)")
    assert summary["exact_match"] == pytest.approx(2 / 6)  # two of toy's six targets
    assert summary["prompt_tokens"]["p50"] > 0 and summary["latency_ms"]["p50"] is not None
    [row] = [line for line in printed.out.splitlines() if line.startswith(PLAIN_FIM)]
    assert row.split()[1:3] == ["6", "33.3%"]
    # What llama-server was started with and asked.
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    argv = records[0]["argv"]
    assert [argv[argv.index(flag) + 1] for flag in ("-m", "-c", "-t", "--host")] == [
        str(model), "4096", "3", "127.0.0.1"]
    [server] = payload["variants"][PLAIN_FIM]["servers"]
    assert server["command"][0] == str(binary)
    completions = [record["body"] for record in records
                   if record.get("path") == "/completion"][1:]  # after the warm-up
    assert {key: completions[0][key] for key in ("n_predict", "temperature", "top_k",
                                                  "cache_prompt")} == {
        "n_predict": 48, "temperature": 0, "top_k": 1, "cache_prompt": True}
    expected = [asyncio.run(site_prompt(_site(site), _words)) for site in payload["sites"]]
    assert [body["prompt"] for body in completions] == expected
    assert any(record.get("path") == "/tokenize" for record in records)


def test_plain_fim_without_llama_server_says_how_to_build_it(
        toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "repo", "--repo", str(toy), "--sites", "1",
                 "--server-arg=--engine", "--server-arg=fake", "--llama-server-binary",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "scripts/build_llama_server.sh" in err
    assert "[1/" not in err  # the default variants include plain-fim; none ran before


def test_a_project_without_sites_is_skipped_with_a_note(
        toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "alone.py").write_text("X = 1\n", encoding="utf-8")
    payload, printed = _run_printed(tmp_path, capsys, toy, "--repo", str(lonely),
                                    "--server-arg=--engine", "--server-arg=fake")
    assert f"skipping {lonely}" in printed.err
    assert payload["skipped_projects"] == [str(lonely)]
    assert list(payload["projects"]) == ["toy"]


# The command


def test_variants_and_the_server_command() -> None:
    assert parse_variant("current=") == ("current", ())
    assert parse_variant("defs=--context-sources=definitions --n-ctx 4096") == \
        ("defs", ("--context-sources=definitions", "--n-ctx", "4096"))
    assert DEFAULT_VARIANTS == (("current", ()), ("plain-fim", ()))  # flashls's defaults
    assert parse_variant("plain-fim") == parse_variant("plain-fim=") == ("plain-fim", ())
    with pytest.raises(BenchError, match="takes no flags"):
        parse_variant("plain-fim=--n-threads=2")
    config = RepoConfig(server_args=("--engine=fake",), model="m.gguf")
    command = server_command(config, ("--x=1",))
    assert command[-4:] == [*FIXED_SERVER_ARGS[-1:], "--model=m.gguf", "--engine=fake",
                            "--x=1"]


def test_the_benchmarks_doc_cites_flags_files_and_reports_that_exist() -> None:
    checkout = Path(__file__).parents[1]
    doc = (checkout / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    section = doc.split("## `flashls bench repo`")[1].split("\n## ")[0]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = set(re.findall(r"(?<![=\w-])--[a-z][a-z-]+", section))  # not a flag's value
    assert {"--projects", "--variant", "--fim-threads", "--llama-server-binary"} <= flags
    assert flags <= set(parser._option_string_actions)
    assert "plain-fim" in section and (checkout / "scripts/build_llama_server.sh").is_file()
    for name in re.findall(r"`(repo-\d{8}-\d{6})`", section):
        assert (checkout / "bench" / "reports" / f"{name}.json").is_file(), name


def test_a_malformed_variant_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "repo", "--variant", "nameless"]) == 1
    assert "NAME=ARGS" in capsys.readouterr().err


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path,
         *extra: str) -> dict[str, Any]:
    return _run_printed(tmp_path, capsys, root, *extra)[0]


def _run_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Path,
                 *extra: str) -> tuple[dict[str, Any], pytest.CaptureResult[str]]:
    """`bench repo` on `root` with the `current` variant and `extra`: its JSON and output."""
    out = tmp_path / "out"
    code = main(["bench", "repo", "--repo", str(root), "--sites", "2", "--variant",
                 "current=", *extra, "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "edit sim" in printed.out
    [json_path] = out.glob("repo-*.json")
    assert json_path.with_suffix(".png").stat().st_size > 0
    payload: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    return payload, printed


def _check_payload(payload: dict[str, Any]) -> None:
    summary = payload["summary"]["current"]
    assert payload["complete"] and summary["sites"] == summary["scored"] == 2
    assert summary["outcomes"] == {"answered": 2}
    for key in ("exact_match", "first_line_match", "edit_similarity", "identifier_match",
                "identifier_f1"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["latency_ms"]["p50"] is not None
    assert sum(summary["sites_per_project"].values()) == 2
    [server] = payload["variants"]["current"]["servers"]
    assert set(FIXED_SERVER_ARGS) <= set(server["command"])
    for site in payload["sites"]:
        answer = site["answers"]["current"]
        assert answer["latency_ms"] is not None and "\n" not in answer["line"]
        assert site["target"].startswith(site["name"])
        assert site["path"] not in site["open_files"]


def test_a_run_on_the_fake_engine(toy: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    payload = _run(tmp_path, capsys, toy, "--server-arg=--engine", "--server-arg=fake")
    _check_payload(payload)
    assert payload["projects"] == {"toy": {"root": str(toy.resolve()), "sites": 2}}
    assert payload["summary"]["current"]["candidates"] == 3.0  # bench repo asks explicitly


def test_every_candidate_is_scored(toy: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    payload = _run(tmp_path, capsys, toy, "--server-arg=--engine", "--server-arg=fake",
                   "--server-arg=--candidates=2")
    summary = payload["summary"]["current"]
    assert summary["candidates"] == 2.0
    assert summary["exact_match"] <= summary["exact_match_any"]
    for site in payload["sites"]:
        assert site["answers"]["current"]["others"] == ["fake_alternative(1)"]


def test_a_variant_can_run_another_servers_command(toy: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`--variant-command` (an older checkout's server, say) adds a variant run by it."""
    command = f"env FLASHLS_FAKE_TOKEN_MS=1 {sys.executable} -m flashls serve"
    payload = _run(tmp_path, capsys, toy, "--server-arg=--engine", "--server-arg=fake",
                   "--variant-command", f"other={command}")
    assert list(payload["summary"]) == ["current", "other"]
    [server] = payload["variants"]["other"]["servers"]
    assert server["command"][:2] == ["env", "FLASHLS_FAKE_TOKEN_MS=1"]
    assert payload["summary"]["other"]["outcomes"] == {"answered": 2}


def test_auto_closed_sites_count_over_closed_lines(toy: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    payload = _run(tmp_path, capsys, toy, "--server-arg=--engine", "--server-arg=fake",
                   "--auto-close", "--sites", "6")
    summary = payload["summary"]["current"]
    assert payload["config"]["auto_close"] and summary["sites"] >= 1
    for site in payload["sites"]:
        assert site["suffix"] == ")" and site["rest"].startswith(site["target"] + ")")
        # The fake engine's `fake_completion(1)` balances the line inside the call.
        assert site["answers"]["current"]["over_closed"] is False
    assert summary["over_closed"] == 0.0


@pytest.mark.model
def test_a_short_run_on_the_real_model(model_path: Path, toy: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    payload = _run(tmp_path, capsys, toy, "--model", str(model_path),
                   "--server-arg=--n-threads=2", "--server-arg=--prefix-budget-tokens=256",
                   "--server-arg=--suffix-budget-tokens=64", "--server-arg=--max-tokens=16")
    _check_payload(payload)
    summary = payload["summary"]["current"]
    assert summary["prompt_tokens"]["p50"] is not None and summary["prompt_tokens"]["p50"] > 0


@pytest.mark.model
def test_plain_fim_on_the_real_model(model_path: Path, toy: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    try:
        fim_server(RepoConfig(model=str(model_path)))
    except BenchError as error:
        pytest.skip(str(error))  # no llama-server built here
    payload = _run(tmp_path, capsys, toy, "--variant", "plain-fim", "--model",
                   str(model_path), "--server-arg=--engine", "--server-arg=fake")
    summary = payload["summary"][PLAIN_FIM]
    assert summary["outcomes"] == {"answered": 2}
    assert summary["prompt_tokens"]["p50"] is not None and summary["prompt_tokens"]["p50"] > 0
    for site in payload["sites"]:
        answer = site["answers"][PLAIN_FIM]
        assert answer["generated_tokens"] and answer["generated_tokens"] >= 1
        assert answer["text"].startswith(answer["line"]) and "\n" not in answer["line"]


def test_sites_are_hashable_records() -> None:
    site = Site("p", "/p", "/p/a.py", "p.a", 0, 0, "x", "x", "/p/b.py", "p.b")
    assert {site: 1}[site] == 1
