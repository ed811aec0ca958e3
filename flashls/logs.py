"""Where flashls logs go (stderr or a file, never stdout: it belongs to JSON-RPC) and at
which level; the level can change at run time from the editor's settings. At the default
level a normal session logs nothing per keystroke."""

from __future__ import annotations

import logging
import sys

# pygls's logger for JSON-RPC messages, and its warning that is no warning.
PYGLS_JSON_RPC = "pygls.protocol.json_rpc"
UNKNOWN_CANCEL = "Cancel notification for unknown message id"


class ExpectedCancels(logging.Filter):
    """Turns pygls's warning about a `$/cancelRequest` for a request it no longer holds
    into a debug line: editors cancel requests already answered at nearly every keystroke,
    which is how LSP works, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(UNKNOWN_CANCEL)):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_EXPECTED_CANCELS = ExpectedCancels()


def configure_logging(level: str, log_file: str | None) -> None:
    """Send logs to stderr or `log_file` at `level`."""
    handler: logging.Handler = (logging.FileHandler(log_file) if log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger(PYGLS_JSON_RPC).addFilter(_EXPECTED_CANCELS)  # added once
    set_log_level(level)


def set_log_level(level: str) -> None:
    """Log at `level`; pygls logs every message at INFO, so it speaks only at debug."""
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("pygls").setLevel("DEBUG" if level == "debug" else "WARNING")
