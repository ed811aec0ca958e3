"""`flashls bench index`: what the workspace index of other files' definitions costs.

Walks a folder as `flashls serve` does for its workspace (`context/workspace.py`, the same
limits) and reports the time to index it, the files and definitions kept, and the memory
it took: the process's RSS growth and the Python heap the index holds (tracemalloc).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from flashls.bench.client import read_rss_mb
from flashls.bench.harness import run_header
from flashls.bench.report import report_paths, write_json
from flashls.context.definitions import DefinitionIndex
from flashls.context.workspace import WorkspaceIndexer
from flashls.settings import Settings

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def measure(root: Path, max_files: int, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Index `root` once on the indexer's own thread and measure it."""
    rss_before = read_rss_mb(os.getpid())
    tracemalloc.start()
    index = DefinitionIndex()
    indexer = WorkspaceIndexer(index, max_files, max_bytes)
    indexer.start([root])
    indexer.join()
    heap_mb = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    rss_after = read_rss_mb(os.getpid())
    counts = index.counts()
    stats = indexer.stats
    return {
        "root": str(root), "max_files": max_files, "files_read": stats.files,
        "files_indexed": counts.files, "bytes_read": stats.bytes,
        "definitions": counts.definitions, "definition_text_chars": counts.definition_chars,
        "usages": counts.usages, "seconds": round(stats.seconds, 3),
        "files_per_second": round(stats.files / stats.seconds, 1) if stats.seconds else None,
        "stopped_at_limit": stats.stopped_at_limit, "skipped_large": stats.skipped_large,
        "errors": len(stats.errors), "heap_mb": round(heap_mb, 1),
        "rss_growth_mb": (None if rss_before is None or rss_after is None
                          else round(rss_after - rss_before, 1)),
    }


def handler(arguments: argparse.Namespace) -> int:
    root = Path(arguments.root).expanduser().resolve()  # the indexer makes file URIs of it
    if not root.is_dir():
        print(f"flashls bench index: {root} is not a folder", file=sys.stderr)
        return 1
    result = measure(root, arguments.max_files)
    payload = {**run_header("index"), **result}
    path = report_paths(Path(arguments.out), "index")[0]
    write_json(path, payload)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


HELP = "time and memory of indexing a workspace for other files' definitions"
DESCRIPTION = ("Walk a folder as the server walks its workspace (honouring .gitignore) "
               "and report the time, files, definitions and memory of the index.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `flashls bench index`."""
    parser.add_argument("--root", required=True, help="the folder to index")
    parser.add_argument("--max-files", type=int, default=Settings().index_max_files,
                        help="most files read (default: the index_max_files setting's "
                             "default, %(default)s)")
    parser.add_argument("--out", default="bench/results",
                        help="where index-<timestamp>.json goes (default: %(default)s)")
