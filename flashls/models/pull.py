"""`flashls models pull`: fetch a GGUF from the Hugging Face hub, or the mirror `HF_ENDPOINT`
names, into the store, under the same verify-then-rename rule as `install`.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import socket
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from flashls.models.manifest import HuggingFaceSource, ModelInfo, find_hub_model, find_model
from flashls.models.staging import InstallError, promote, verify_candidate
from flashls.models.store import file_problem, model_path, models_dir

logger = logging.getLogger(__name__)

_LOCAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# Every fetch gives up on a silent endpoint: seconds to connect, and to wait for each answer.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
TIMEOUT_ENV = "FLASHLS_HTTP_TIMEOUT_S"  # one number replacing both (tests use ~1 s)


def pull(repo: str, filename: str, *, name: str | None = None, revision: str = "main",
         force: bool = False, verify: bool = False) -> Path:
    """Fetch `filename` from hub repository `repo` into the store and return its path.

    A manifest entry for the same file supplies the store name, size and sha256; otherwise
    the file keeps its own name, or becomes `<name>.gguf` so `flashls.model = name` finds it.
    """
    known = find_hub_model(repo, filename)
    if known is not None and name is None:
        return pull_model(known, force=force, verify=verify)
    target = models_dir() / _local_file_name(filename, name)
    return fetch_from_hub(repo, filename, revision, target, label=name or filename,
                          size=known.size if known else None,
                          sha256=known.sha256 if known else None, force=force, verify=verify)


def pull_model(model: ModelInfo, *, force: bool = False, verify: bool = False) -> Path:
    """Fetch a manifest model whose source is the hub; return its path in the store."""
    if not isinstance(model.source, HuggingFaceSource):
        raise InstallError(f"{model.name} is not on the Hugging Face hub; use "
                           f"`flashls models install {model.name}`")
    source = model.source
    return fetch_from_hub(source.repo, source.file, source.revision, model_path(model),
                          label=model.name, size=model.size, sha256=model.sha256,
                          force=force, verify=verify)


def _local_file_name(filename: str, name: str | None) -> str:
    if name is None:
        local = PurePosixPath(filename).name
        if not local.endswith(".gguf"):
            raise InstallError(f"{filename} is not a .gguf file")
        return local
    if not _LOCAL_NAME.fullmatch(name) or name.endswith(".gguf"):
        raise InstallError(f"--name {name!r} must be a bare name like `my-model` "
                           "(letters, digits, `.`, `_`, `-`)")
    if find_model(name) is not None:
        raise InstallError(f"--name {name!r} is already a manifest model; pick another name")
    return f"{name}.gguf"


def fetch_from_hub(repo: str, filename: str, revision: str, target: Path, *, label: str,
                   size: int | None, sha256: str | None, force: bool = False,
                   verify: bool = False) -> Path:
    """Download into a staging folder beside `target`, verify, then rename onto `target`."""
    problem = None if force else file_problem(target, size=size, sha256=sha256,
                                              full_hash=verify)
    if not force and problem is None:
        logger.info("%s is already present at %s", label, target)
        return target
    staging = target.with_name(f".pull-{target.name}")
    try:
        downloaded = _hub_download(repo, filename, revision, staging)
    except InstallError:
        _discard_unless_resumable(staging)
        raise
    try:
        verify_candidate(downloaded, label=label, size=size, sha256=sha256)
    except InstallError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    promote(downloaded, target)
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("pulled %s/%s to %s", repo, filename, target)
    return target


def _discard_unless_resumable(staging: Path) -> None:
    """Keep a staging folder holding a partial download, so a retry resumes; drop others."""
    if not any(staging.rglob("*.incomplete")):
        shutil.rmtree(staging, ignore_errors=True)


def _hub_download(repo: str, filename: str, revision: str, staging: Path) -> Path:
    """`hf_hub_download` into `staging`, with `HF_ENDPOINT` read now rather than at import."""
    from huggingface_hub import constants, hf_hub_download, hf_hub_url

    if constants.HF_HUB_OFFLINE:
        raise InstallError("HF_HUB_OFFLINE is set; unset it to pull from the Hugging Face hub")
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    logger.info("downloading %s/%s from %s", repo, filename, endpoint or constants.ENDPOINT)
    connect_s, read_s = network_timeouts()
    # The hub client retries a silent endpoint for minutes (60 s a try): ask once first.
    problem = endpoint_problem(url, connect_s, read_s)
    if problem is not None:
        raise InstallError(f"could not download {filename} from {repo}: {problem}")
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_dir=staging,
                                    endpoint=endpoint, etag_timeout=read_s))
    except Exception as error:  # the hub client raises many unrelated types
        raise InstallError(f"could not download {filename} from {repo}: "
                           f"{_describe_failure(error, url)}") from error


def network_timeouts() -> tuple[float, float]:
    """(connect, read) seconds for every download; `$FLASHLS_HTTP_TIMEOUT_S` sets both."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return CONNECT_TIMEOUT_S, READ_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        logger.warning("ignoring %s=%r: not a positive number of seconds", TIMEOUT_ENV, raw)
        return CONNECT_TIMEOUT_S, READ_TIMEOUT_S
    return seconds, seconds


def endpoint_problem(url: str, connect_s: float, read_s: float) -> str | None:
    """None if `url`'s server answers a HEAD at all (any status, a redirect too: it is not
    followed), else what went wrong, in one line."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else \
        http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=connect_s)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(read_s)  # connected: now each read may take `read_s`
        connection.request("HEAD", target, headers={"User-Agent": "flashls"})
        connection.getresponse()
        return None
    except (OSError, http.client.HTTPException) as error:
        return _describe_failure(error, url, connect_s, read_s)
    finally:
        connection.close()


def _describe_failure(error: BaseException, url: str, connect_s: float | None = None,
                      read_s: float | None = None) -> str:
    """One line naming the endpoint and what happened: timed out, refused, or the error."""
    host = urlsplit(url).netloc or url
    chain = _causes(error)
    if any(isinstance(cause, ConnectionRefusedError) for cause in chain):
        return f"{host} refused the connection"
    if any(isinstance(cause, socket.gaierror) for cause in chain):
        return f"{host} could not be resolved (no such host, or no DNS)"
    if any(isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__
           for cause in chain):
        limit = f" (connect {connect_s:g} s, read {read_s:g} s)" if read_s else ""
        return f"{host} timed out without answering{limit}"
    text = str(error).strip()
    first_line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__} from {host}: {first_line}"


def _causes(error: BaseException) -> list[BaseException]:
    """`error` and the exceptions it was raised from, innermost last."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
