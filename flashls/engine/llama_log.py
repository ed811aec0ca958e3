"""llama.cpp's own log, sent through Python logging (this module's logger) instead of
straight to stderr, so the log level and the log file apply to it too.

llama.cpp reports model loading and cache housekeeping at its info and warning levels:
all of that is debug here. Its errors stay errors, except those an abort causes (flashls
stops a decode on purpose when a keystroke supersedes it; llama.cpp then reports a failed
graph and the cache cells it removed), which are debug too.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Callable, Iterator

import llama_cpp

log = logging.getLogger(__name__)

# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error; 5 continues the previous message
# (load progress dots). llama-cpp-python's own callback reads 3 as an error, which is why
# "decode: removing memory module entries" used to reach stderr at every abort.
GGML_ERROR = 4
GGML_CONTINUE = 5


class LlamaLog:
    """The log callback llama.cpp calls, one piece of text at a time, and the lines it
    makes of them.

    Pieces are joined until one ends a line; a line takes the level of its first piece.
    llama.cpp logs from the thread that called it (the model thread), so one buffer
    serves. Which failures are expected is per thread (`failures_expected_while`)."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._level = logging.DEBUG
        self._expected = threading.local()
        # llama.cpp keeps only a pointer: this object must outlive every call.
        self.callback = llama_cpp.llama_log_callback(self._receive)

    def install(self) -> None:
        """Make llama.cpp (and ggml) log here, replacing llama-cpp-python's callback."""
        llama_cpp.llama_log_set(self.callback, ctypes.c_void_p(0))

    @contextlib.contextmanager
    def failures_expected_while(self, condition: Callable[[], bool]) -> Iterator[None]:
        """For the block, on this thread: llama.cpp's errors are debug while `condition`
        holds (an abort is under way, so the failure it reports was asked for)."""
        self._expected.condition = condition
        try:
            yield
        finally:
            self._expected.condition = None

    def _receive(self, ggml_level: int, text: bytes | None, _user_data: object) -> None:
        if ggml_level != GGML_CONTINUE:
            self._flush()
            self._level = self._python_level(ggml_level)
        self._pending += text or b""
        if self._pending.endswith(b"\n"):
            self._flush()

    def _python_level(self, ggml_level: int) -> int:
        if ggml_level != GGML_ERROR:
            return logging.DEBUG
        condition = getattr(self._expected, "condition", None)
        return logging.DEBUG if condition is not None and condition() else logging.ERROR

    def _flush(self) -> None:
        line = self._pending.decode("utf-8", errors="replace").strip()
        self._pending.clear()
        if line:
            log.log(self._level, "%s", line)


LLAMA_LOG = LlamaLog()
"""The one route: llama.cpp has one log callback per process."""
