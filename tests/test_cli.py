"""The command line: `flashls complete` on the real model, and `serve`'s safety checks."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from flashls.cli import main

WALK = ("import os\n\n\ndef python_files(root):\n    found = []\n"
        "    for directory, _, names in os.walk(root):\n        for name in names:\n"
        "            if name.endswith('.py'):\n                found.append(os.path.\n"
        "    return found\n")


@pytest.mark.model
def test_complete_prints_the_suggestion_and_timings(model_path: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "walk.py"
    source.write_text(WALK)
    code = main(["complete", str(source), "--line", "8", "--col", "37", "--json",
                 "--model", str(model_path), "--n-threads", "2", "--time-budget-ms", "60000"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    completion = result["completion"]
    # Not the model's exact text (CPUs differ on near-ties): what holds on every machine.
    assert completion.strip() and "return found" not in completion, completion
    lines = WALK.splitlines(keepends=True)
    lines[8] = lines[8][:37] + completion + lines[8][37:]
    ast.parse("".join(lines))
    timings = result["timings"]
    assert timings["evaluated_tokens"] == timings["prompt_tokens"] > 20
    assert timings["generated_tokens"] >= 1
    assert timings["total_ms"] >= timings["prompt_ms"] + timings["generate_ms"]


def test_complete_explains_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    assert main(["complete", str(source), "--line", "5", "--col", "0", "--engine", "fake"]) == 1
    assert "past the end" in capsys.readouterr().err
    assert main(["complete", str(tmp_path / "missing.py"), "--line", "0", "--col", "0"]) == 1
    assert "cannot read" in capsys.readouterr().err
    missing_model = ["complete", str(source), "--line", "0", "--col", "5", "--model",
                     str(tmp_path / "none.gguf")]
    assert main(missing_model) == 1
    error = capsys.readouterr().err
    assert "none.gguf" in error and "flashls models install" in error


def test_serve_refuses_a_non_loopback_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--tcp", "192.0.2.1:2087", "--engine", "fake"]) == 2
    assert "loopback" in capsys.readouterr().err
