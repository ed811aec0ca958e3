"""RSS and threads of `flashls serve` on the real model across 20 engine reloads, each
caused by a changed setting (n_threads), as an editor would send it; prints one JSON line.

Usage: .venv/bin/python bench/reload_rss.py [RELOADS]
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from flashls.bench.client import LspClient
from flashls.bench.latency import initialize_params

TEXT = "import os\n\n\ndef walk(root):\n    for directory, _, names in os.walk(root):\n        pa"
URI = "file:///reload/walk.py"


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


async def ready(client: LspClient) -> None:
    """Wait until a completion comes back from the (re)loaded model."""
    params = {"textDocument": {"uri": URI}, "position": {"line": 5, "character": 10},
              "context": {"triggerKind": 2}}
    for _ in range(600):
        response = await client.request("textDocument/inlineCompletion", params, 120)
        if response.error is None:
            return
        await asyncio.sleep(0.1)


async def main(reloads: int) -> None:
    client = await LspClient.start([sys.executable, "-m", "flashls", "serve", "--n-threads", "2",
                                    "--time-budget-ms", "60000"])
    await client.request("initialize", initialize_params(), 120)
    await client.notify("initialized", {})
    await client.notify("textDocument/didOpen", {"textDocument": {
        "uri": URI, "languageId": "python", "version": 1, "text": TEXT}})
    await ready(client)
    one_load, threads_before = client.rss_mb(), threads(client.pid)
    samples = []
    for index in range(reloads):
        await client.notify("workspace/didChangeConfiguration",
                            {"settings": {"flashls": {"nThreads": 1 + index % 2}}})
        await ready(client)
        samples.append(client.rss_mb())
    print(json.dumps({"reloads": reloads, "rss_mb_one_load": one_load,
                      "rss_mb_after": samples[-1], "rss_mb_peak": max(samples),
                      "ratio": round(samples[-1] / one_load, 3),
                      "samples": [round(sample) for sample in samples],
                      "threads_before": threads_before, "threads_after": threads(client.pid)}))
    await client.request("shutdown", None, 30)
    await client.notify("exit", None)
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
