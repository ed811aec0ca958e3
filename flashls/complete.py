"""`flashls complete FILE --line N --col M`: one completion through the full pipeline."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from flashls.context import language_of_path
from flashls.documents import Document
from flashls.engine.base import EngineError
from flashls.server import make_engine
from flashls.service import CompletionRequest, CompletionService, Rejected
from flashls.settings import Settings, engine_switch


def complete_file(config: Settings, arguments: argparse.Namespace) -> int:
    """Print the completion at a position of a file; 1 with a message when there is none."""
    if arguments.time_budget_ms is None:
        # One answer, printed once: the whole suggestion matters more than its speed.
        config = dataclasses.replace(config, time_budget_ms=max(config.time_budget_ms, 60000))
    path = Path(arguments.file)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as error:
        print(f"flashls: cannot read {path}: {error.strerror}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    service = CompletionService(config, make_engine(engine_switch(arguments), config))
    language = arguments.language or language_of_path(str(path))
    uri = path.resolve().as_uri()
    # The pipeline sees lines as the server does: any LSP line break as one "\n".
    text = Document(uri, language, 0, text).lf_view()
    service.document_changed(uri, language, text)
    try:
        service.worker.load().result()
        load_ms = (time.perf_counter() - started) * 1000
        completion = service.complete_blocking(CompletionRequest(
            uri=uri, language_id=language, text=text, line=arguments.line,
            character=arguments.col))
    except (Rejected, EngineError) as error:
        print(f"flashls: {error}", file=sys.stderr)
        return 1
    if arguments.json:
        print(json.dumps({"file": str(path), "line": arguments.line, "col": arguments.col,
                          "language": language, "completion": completion.text,
                          "finish": completion.finish, "load_ms": round(load_ms, 1),
                          "timings": {key: round(value, 2) for key, value
                                      in completion.timings.items()}}, indent=2))
    else:
        print(completion.text)
    return 0
