"""What flashls needs installed: the language server runs without matplotlib (the `bench`
extra, which the bench commands ask for by name), and llama-cpp-python is pinned to the
releases whose internals the engine uses, and checked when the engine loads."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import llama_cpp
import pytest

from flashls.cli import main
from flashls.engine.llama import LLAMA_CPP_NEWEST, LLAMA_CPP_OLDEST, llama_cpp_problem

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PNG_COMMANDS = ("latency", "session", "users", "wait", "repo")


def requirement(requirements: list[str], name: str) -> str | None:
    """The requirement on `name` in a pyproject list, without spaces or markers."""
    for line in requirements:
        if re.match(rf"{re.escape(name)}\b(?![-_])", line):
            return line.replace(" ", "")
    return None


def test_matplotlib_comes_with_the_bench_extra_only() -> None:
    assert requirement(PROJECT["dependencies"], "matplotlib") is None
    assert requirement(PROJECT["optional-dependencies"]["bench"], "matplotlib")
    # The README's set-up installs `.[dev]`: the tests draw PNGs, so dev brings bench.
    assert "flashls[bench]" in PROJECT["optional-dependencies"]["dev"]


def test_the_server_and_its_engine_load_without_matplotlib() -> None:
    blocked = ("import sys; sys.modules['matplotlib'] = None; "
               "import flashls.server, flashls.engine.llama, flashls.engine.remote, "
               "flashls.complete; from flashls.cli import build_parser; build_parser()")
    run = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("command", PNG_COMMANDS)
def test_bench_without_matplotlib_says_what_to_install_before_running(
        command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    assert main(["bench", command, "--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"flashls bench {command}: ") and "matplotlib" in error
    assert "pip install 'flashls[bench]'" in error
    assert list(tmp_path.iterdir()) == []  # nothing ran, nothing was written


def test_llama_cpp_python_pin_matches_the_engine_check() -> None:
    pinned = requirement(PROJECT["dependencies"], "llama-cpp-python")
    assert pinned == f"llama-cpp-python>={LLAMA_CPP_OLDEST},<={LLAMA_CPP_NEWEST}"
    # scripts/install.sh builds this one; it must pass the check too.
    flags = (ROOT / "scripts" / "cpu_flags.sh").read_text()
    built = re.search(r"^LLAMA_VERSION=(\S+)$", flags, re.MULTILINE)
    assert built is not None and llama_cpp_problem(built.group(1)) is None
    assert llama_cpp_problem(llama_cpp.__version__) is None


@pytest.mark.parametrize("found", ["0.3.15", "0.3.37", "0.4.0", "1.0", "unknown"])
def test_a_llama_cpp_python_outside_the_pin_is_refused(found: str) -> None:
    problem = llama_cpp_problem(found)
    assert problem is not None and f"found {found}" in problem
    assert f"pip install 'llama-cpp-python>={LLAMA_CPP_OLDEST},<={LLAMA_CPP_NEWEST}'" in problem


@pytest.mark.parametrize("found", [LLAMA_CPP_OLDEST, "0.3.20", LLAMA_CPP_NEWEST,
                                   f"{LLAMA_CPP_NEWEST}+cu124"])
def test_a_llama_cpp_python_inside_the_pin_is_accepted(found: str) -> None:
    assert llama_cpp_problem(found) is None


def test_loading_the_engine_with_another_llama_cpp_python_fails_clearly() -> None:
    other = ("import llama_cpp; llama_cpp.__version__ = '0.4.0'; "
             "import flashls.engine.llama")
    run = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode != 0
    assert (f"ImportError: flashls needs llama-cpp-python {LLAMA_CPP_OLDEST} to "
            f"{LLAMA_CPP_NEWEST}") in run.stderr
    assert "found 0.4.0" in run.stderr
