"""Where flashls logs go (stderr or a file, never stdout: it belongs to JSON-RPC) and at
which level; the level can change at run time from the editor's settings."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str, log_file: str | None) -> None:
    """Send logs to stderr or `log_file` at `level`."""
    handler: logging.Handler = (logging.FileHandler(log_file) if log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers[:] = [handler]
    set_log_level(level)


def set_log_level(level: str) -> None:
    """Log at `level`; pygls logs every message at INFO, so it speaks only at debug."""
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("pygls").setLevel("DEBUG" if level == "debug" else "WARNING")
