"""The documentation against the repository: the reports it cites, its links, its commands.

`bench/reports/` holds only the runs the docs cite, so each figure can be traced to its
JSON and nothing is kept that no claim rests on. A command a doc shows must parse with
the real `flashls` parser, flags passed through to `flashls serve` included, and a
script it runs must exist.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashls.cli import build_parser

ROOT = Path(__file__).parents[1]
REPORTS = ROOT / "bench" / "reports"
# A report is cited by its name: kind-YYYYMMDD-HHMMSS, under gpu-h200/ for that machine's.
REPORT_NAME = re.compile(r"(?<![\w-])((?:gpu-h200/)?(?:latency|session|repo|infill|wait|users"
                         r"|index|llama-bench|build|e2e)-\d{8}-\d{6})(?![\d-])")
ABBREVIATED = re.compile(r"`-\d{6}`")  # `-081307` for a report: not traceable by name
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SHELL_BLOCK = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SEPARATORS = {"&", "&&", "|", "||", ";"}
PASSED_TO_SERVE = ("--server-arg", "--baseline-arg")


def documents() -> list[Path]:
    """The docs a user reads: README, docs/, and the editors' READMEs (not node_modules)."""
    editors = [path for path in (ROOT / "editors").rglob("README.md")
               if "node_modules" not in path.parts]
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(editors)]


def report_files() -> list[Path]:
    """Every recorded run: the files under bench/reports except the folders' READMEs."""
    return sorted(path for path in REPORTS.rglob("*")
                  if path.is_file() and path.name != "README.md")


def report_name(path: Path) -> str:
    """`gpu-h200/latency-20261130-212834` for .../gpu-h200/latency-20261130-212834.json."""
    relative = path.relative_to(REPORTS)
    return str(relative.parent / relative.name.split(".")[0]).removeprefix("./")


def cited_reports() -> dict[str, list[str]]:
    """Report name -> the docs citing it."""
    cited: dict[str, list[str]] = {}
    for doc in documents():
        for name in REPORT_NAME.findall(doc.read_text(encoding="utf-8")):
            cited.setdefault(name, []).append(str(doc.relative_to(ROOT)))
    return cited


def test_every_report_the_docs_cite_is_kept() -> None:
    kept = {report_name(path) for path in report_files()}
    cited = cited_reports()
    assert len(cited) >= 10  # the docs quote figures; a broken pattern would find none
    missing = {name: docs for name, docs in cited.items() if name not in kept}
    assert not missing, f"cited but not in bench/reports: {missing}"


def test_every_kept_report_is_cited() -> None:
    cited = cited_reports()
    uncited = [str(path.relative_to(REPORTS)) for path in report_files()
               if report_name(path) not in cited]
    assert not uncited, f"in bench/reports but cited by no doc (git rm them): {uncited}"


def test_a_cited_report_has_its_data_beside_any_picture() -> None:
    for name in cited_reports():
        files = {path.name.split(".", 1)[1] for path in report_files()
                 if report_name(path) == name}
        assert files & {"json", "log"}, (name, files)  # a PNG alone backs no figure


def test_no_doc_abbreviates_a_report_name() -> None:
    for doc in documents():
        found = ABBREVIATED.findall(doc.read_text(encoding="utf-8"))
        assert not found, (doc.relative_to(ROOT), found)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_relative_links_and_their_anchors_resolve() -> None:
    checked = 0
    for doc in documents():
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            path = (doc.parent / file_part).resolve() if file_part else doc
            where = f"{doc.relative_to(ROOT)} -> {target}"
            assert path.exists(), where
            if anchor:
                assert anchor in _anchors(path), where
            checked += 1
    assert checked >= 20


def test_the_readme_shows_the_two_commands_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = re.findall(r"^(bash scripts/\S+\.sh)$", ci, re.MULTILINE)
    assert commands == ["bash scripts/install.sh", "bash scripts/check.sh"]
    blocks = "".join(SHELL_BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8")))
    starts = [line.split("#")[0].strip() for line in blocks.splitlines()]
    assert all(command in starts for command in commands)


def shell_commands() -> Iterator[tuple[str, list[str]]]:
    """(doc, words) for each command line of the docs' sh blocks, continuations joined."""
    for doc in documents():
        for block in SHELL_BLOCK.findall(doc.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                command: list[str] = []
                for word in [*words, ";"]:
                    if word in SEPARATORS:
                        if command:
                            yield str(doc.relative_to(ROOT)), command
                        command = []
                    else:
                        command.append(word)


def _without_environment(words: list[str]) -> list[str]:
    """The command after its leading `NAME=value` assignments."""
    index = 0
    while index < len(words) and re.match(r"[A-Za-z_]\w*=", words[index]):
        index += 1
    return words[index:]


def _flashls_invocations() -> list[tuple[str, list[str]]]:
    found = []
    for doc, words in shell_commands():
        command = _without_environment(words)
        if command and (command[0] == "flashls" or command[0].endswith("/bin/flashls")):
            found.append((doc, command[1:]))
    return found


def _strict_parser() -> argparse.ArgumentParser:
    """`flashls`'s parser, with no abbreviated flags accepted: a doc spells them out."""
    parsers = [build_parser()]
    for parser in parsers:
        parser.allow_abbrev = False
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return parsers[0]


def _parse(parser: argparse.ArgumentParser, arguments: list[str], where: str) -> None:
    try:
        parser.parse_args(arguments)
    except SystemExit as exit_:  # 0: `--help` printed its text
        if exit_.code != 0:
            pytest.fail(f"{where}: `flashls {shlex.join(arguments)}` does not parse")


def _passed_to_serve(arguments: list[str]) -> list[str]:
    """The `flashls serve` flags a bench command passes on (`--server-arg=--n-threads=2`,
    `--variant NAME=ARGS`)."""
    passed: list[str] = []
    for index, word in enumerate(arguments):
        name, equals, value = word.partition("=")
        if name in PASSED_TO_SERVE:
            passed.append(value if equals else arguments[index + 1])
        if name == "--variant" and not equals and index + 1 < len(arguments):
            args = arguments[index + 1].partition("=")[2]
            passed.extend(shlex.split(args))
    return passed


def test_every_flashls_command_in_the_docs_parses() -> None:
    invocations = _flashls_invocations()
    assert len(invocations) >= 15
    subcommands = {arguments[0] for _, arguments in invocations if arguments}
    assert {"serve", "models", "bench"} <= subcommands
    for doc, arguments in invocations:
        _parse(_strict_parser(), arguments, doc)
        passed = _passed_to_serve(arguments)
        if passed:
            _parse(_strict_parser(), ["serve", *passed], f"{doc}, passed to serve")


def test_every_script_the_docs_run_exists() -> None:
    scripts = []
    for doc, words in shell_commands():
        command = _without_environment(words)
        if command[:1] == ["bash"] and len(command) > 1:
            scripts.append((doc, command[1]))
        elif command and command[0].endswith(".sh"):
            scripts.append((doc, command[0]))
    assert len(scripts) >= 3
    for doc, script in scripts:
        assert (ROOT / script).is_file(), (doc, script)
