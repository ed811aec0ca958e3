"""The raw-bytes fuzz suite in CI: a fixed seed, a bounded time, and every total that
must be zero is zero (the suite itself lives in `tests/fuzz_lsp.py`)."""

from __future__ import annotations

import json

from tests.fuzz_lsp import MUST_BE_ZERO, run

SEED = 20240611


def test_server_survives_hostile_input_and_keeps_documents_in_sync() -> None:
    totals = run(seed=SEED, edits=4000, time_limit_s=40)
    print(json.dumps(totals, ensure_ascii=True))
    assert {name: totals[name] for name in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0), \
        "\n".join(totals["failures"])
    assert totals["skipped"] == [], totals["skipped"]
    assert totals["rss_mb_after"] - totals["rss_mb_before"] <= 50, totals
    assert totals["edits"] >= 1000 and totals["inputs_tried"] >= 100, totals
