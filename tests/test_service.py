"""The completion pipeline called directly: joining running generations, progressive answers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flashls.engine.base import CancelToken, GenerationRequest, GenerationResult, Timings
from flashls.engine.fake import FakeEngine
from flashls.service import CompletionRequest, CompletionService
from flashls.settings import Settings

URI = "file:///work/a.py"
LINE = "total = comp"


class GatedEngine(FakeEngine):
    """The fake engine, whose background continuation waits until the test opens a gate."""

    def __init__(self) -> None:
        # 400 ms a token against a 600 ms budget: two tokens ("_do", "ne("), then the cut.
        super().__init__(token_ms=400)
        self.gate = threading.Event()

    def resume(self, cancel: CancelToken) -> GenerationResult | None:
        self.gate.wait(timeout=30)
        self.token_ms = 1
        return super().resume(cancel)


def typed(extra: str) -> CompletionRequest:
    text = LINE + extra + "\n"
    return CompletionRequest(URI, "python", text, 0, len(LINE + extra))


def service() -> tuple[CompletionService, GatedEngine]:
    engine = GatedEngine()
    return CompletionService(Settings(time_budget_ms=600, partial_answer_ms=0), engine), engine


async def test_keystrokes_along_a_cut_suggestion_wait_for_its_continuation() -> None:
    pipeline, engine = service()
    first = await pipeline.complete(typed(""))
    assert (first.source, first.finish) == ("model", "deadline")
    assert "_done(".startswith(first.text) and first.text

    # The continuation is held back: the next keystroke waits out its own budget, then
    # shows what had been generated when the first answer was cut.
    held = await pipeline.complete(typed("_"))
    assert (held.source, held.finish) == ("cache", "deadline")
    assert "done(".startswith(held.text) and held.text

    waiting = asyncio.create_task(pipeline.complete(typed("_d")))
    await asyncio.sleep(0.1)
    engine.gate.set()
    joined = await waiting
    assert (joined.source, joined.finish, joined.text) == ("cache", "joined", "one(1)")
    assert engine.calls == 1  # the model was asked once; the rest was its continuation


async def test_cancelling_a_waiting_keystroke_leaves_the_continuation_running() -> None:
    pipeline, engine = service()
    await pipeline.complete(typed(""))
    waiting = asyncio.create_task(pipeline.complete(typed("_")))
    await asyncio.sleep(0.1)
    waiting.cancel()  # the editor's $/cancelRequest when the user types on
    engine.gate.set()
    for _ in range(100):
        later = await pipeline.complete(typed("_do"))
        if later.finish == "continued":
            break
        await asyncio.sleep(0.05)
    assert (later.source, later.finish, later.text) == ("cache", "continued", "ne(1)")
    assert engine.calls == 1


async def test_typing_away_from_a_cut_suggestion_asks_the_model_again() -> None:
    pipeline, engine = service()
    await pipeline.complete(typed(""))
    engine.gate.set()
    other = await pipeline.complete(typed("x"))
    assert other.source == "model"
    assert engine.calls == 2


async def test_a_cancelled_request_keeps_generating_for_the_keystroke_after_it() -> None:
    # An editor cancels the request of every keystroke when the next one comes; the next
    # request, typed along the first one's text, waits for that generation to finish.
    engine = FakeEngine(token_ms=100)
    pipeline = CompletionService(Settings(time_budget_ms=5000, partial_answer_ms=0), engine)
    first = asyncio.create_task(pipeline.complete(typed("")))
    await asyncio.sleep(0.05)
    first.cancel()
    second = await pipeline.complete(typed("_"))
    assert (second.source, second.finish, second.text) == ("cache", "joined", "done(1)")
    assert engine.calls == 1
    third = await pipeline.complete(typed("_d"))
    assert (third.source, third.finish, third.text) == ("cache", "cache", "one(1)")


async def test_work_nobody_waits_for_yields_to_a_request_in_another_document() -> None:
    engine = FakeEngine(token_ms=300)
    pipeline = CompletionService(Settings(time_budget_ms=10000, partial_answer_ms=0), engine)
    # "fake_completion(1)": six tokens, 1.8 s, if nothing stops it.
    orphan = asyncio.create_task(pipeline.complete(
        CompletionRequest("file:///work/b.py", "python", "x = (\n", 0, 5)))
    await asyncio.sleep(0.1)
    orphan.cancel()  # the editor gave up on it; the user moved to another file
    await asyncio.sleep(0)  # the server handles the cancel before the next request
    started = time.monotonic()
    answer = await pipeline.complete(typed(""))
    assert answer.text == "_done(1)"
    # At most one more token of the orphan (0.3 s), then this request's three (0.9 s).
    assert time.monotonic() - started < 1.6


class ClosingEngine(FakeEngine):
    """The fake engine, counting when it is freed and from which thread."""

    def __init__(self) -> None:
        super().__init__(token_ms=50)
        self.closed_by: str | None = None

    def close(self) -> None:
        self.closed_by = threading.current_thread().name


async def test_engine_reloads_end_their_threads_and_free_each_engine() -> None:
    settings = Settings(time_budget_ms=60000)
    pipeline = CompletionService(settings, ClosingEngine())
    threads_before = threading.active_count()
    engines = []
    for _ in range(40):
        running = asyncio.create_task(pipeline.complete(typed("")))
        await asyncio.sleep(0.01)  # a generation is running when the reload comes
        engines.append(pipeline.worker.engine)
        old_worker = pipeline.worker
        pipeline.replace_engine(ClosingEngine(), settings)
        assert old_worker.join(timeout=5)
        answer = await running
        assert answer.finish in ("cancelled", "eos", "stop")  # resolved, never left hanging
    assert all(engine.closed_by == "flashls-model" for engine in engines)
    assert threading.active_count() <= threads_before
    pipeline.close()
    assert pipeline.worker.join(timeout=5)


def test_a_stopped_worker_resolves_every_job() -> None:
    from flashls.engine.base import GenerationRequest
    from flashls.engine.worker import ModelWorker

    worker = ModelWorker(FakeEngine(token_ms=100))
    request = GenerationRequest("x = ", "", 30, lambda text: None)
    futures = [worker.generate(request, CancelToken()) for _ in range(3)]
    time.sleep(0.05)
    worker.stop()
    late = worker.generate(request, CancelToken())
    assert worker.join(timeout=5)
    for future in [*futures, late]:
        assert future.cancelled() or future.result(timeout=1).value.finish == "cancelled"



class WindowEngine(FakeEngine):
    """The fake engine that answers from the short window, as the real one does at a cold
    place, and records the prompts it was asked to evaluate ahead of time."""

    def __init__(self) -> None:
        super().__init__(token_ms=1)
        self.prefilled: list[tuple[str, tuple[str, str] | None, tuple[str, str] | None]] = []
        self.prefill_done = threading.Event()

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> GenerationResult:
        result = super().generate(request, cancel)
        result.timings.short_window = request.short is not None
        return result

    def prefill(self, request: GenerationRequest, cancel: CancelToken) -> int:
        self.prefilled.append((request.prefix, request.short, request.medium))
        self.prefill_done.set()
        return super().prefill(request, cancel)


async def test_an_answer_from_the_short_window_is_followed_by_the_full_one() -> None:
    lines = [f"value_{index} = {index}" for index in range(400)]
    text = "\n".join(lines) + "\ntotal = comp  # sum\nprint(total)\n"
    request = CompletionRequest(URI, "python", text, 400, len("total = comp"))
    engine = WindowEngine()
    pipeline = CompletionService(Settings(cold_window_tokens=64), engine)
    answer = await pipeline.complete(request)
    assert answer.text == "_done(1)" and answer.timings["short_window"] == 1.0
    # Nobody asked yet, so the full window is evaluated in the background.
    assert await asyncio.to_thread(engine.prefill_done.wait, 10)
    (prefix, short, medium), = engine.prefilled
    assert short is not None and prefix.endswith(short[0]) and len(short[0]) < len(prefix)
    assert len(short[0]) < 64 * 4 < len(prefix)
    assert short[1] == "  # sum"  # the rest of the line: no line below it to evaluate again
    # The medium window (256 tokens by default): more lines before the cursor, no more after.
    assert medium is not None and medium[0].endswith(short[0]) and medium[1] == short[1]
    assert 64 * 4 < len(medium[0]) < 256 * 4 < len(prefix)
    # Small documents have no short window: the full one is no larger.
    small = CompletionRequest("file:///work/b.py", "python", "total = comp", 0, 12)
    context, cursor = pipeline.prepare(small)
    assert pipeline.cold_windows(small, cursor, context) == ()
    off = CompletionService(Settings(cold_window_tokens=0), WindowEngine())
    context, cursor = off.prepare(request)
    assert off.cold_windows(request, cursor, context) == ()
    # A medium window no larger than the short one, or no smaller than the full one, is none.
    for medium_tokens in (64, 4000):
        short_only = CompletionService(
            Settings(cold_window_tokens=64, medium_window_tokens=medium_tokens), WindowEngine())
        context, cursor = short_only.prepare(request)
        assert [window.prefix for window in short_only.cold_windows(
            request, cursor, context)] == [short[0]], medium_tokens
        short_only.close()
    pipeline.close()
    off.close()


class CountingEngine(WindowEngine):
    """The window engine with a tokenizer of five characters a token."""

    def count_tokens(self, text: str) -> int | None:
        return len(text) // 5


async def test_the_budgets_count_the_engine_s_tokens_when_it_has_a_tokenizer() -> None:
    text = "\n".join(f"value_{index} = {index}" for index in range(2000)) + "\ntotal = comp\n"
    request = CompletionRequest(URI, "python", text, 2000, len("total = comp"))
    settings = Settings(prefix_budget_tokens=400, suffix_budget_tokens=0)
    counted = CompletionService(settings, CountingEngine())
    estimated = CompletionService(settings, WindowEngine())
    try:
        wide, _ = counted.prepare(request)
        narrow, _ = estimated.prepare(request)
        assert 400 * 5 * 0.75 < len(wide.prefix) <= 400 * 5
        assert len(narrow.prefix) <= 400 * 3.2 and len(wide.prefix) > 1.3 * len(narrow.prefix)
    finally:
        counted.close()
        estimated.close()


async def test_a_partial_answer_shows_whole_words_and_the_generation_goes_on() -> None:
    """With partial_answer_ms, a request is answered with the whole words generated so far
    while the generation continues; the keystroke that types along it joins it."""
    engine = FakeEngine(token_ms=300)  # wide gaps between tokens: no race on a busy CI
    pipeline = CompletionService(Settings(time_budget_ms=5000, partial_answer_ms=100), engine)
    announced: list[CompletionRequest] = []
    pipeline.on_finished = announced.append
    first = await pipeline.complete(typed(""))
    assert first.finish == "partial" and first.text and "_done(1)".startswith(first.text)
    assert first.text != "_done(1)"
    joined = await pipeline.complete(typed("_"))
    assert joined.source == "cache" and "done(1)".startswith(joined.text) and joined.text
    # Waiting long enough gives the whole suggestion, from the one model call.
    await asyncio.sleep(1.5)
    whole = await pipeline.complete(typed("_"))
    assert (whole.source, whole.text) == ("cache", "done(1)")
    assert engine.calls == 1
    # The end is told once, at the newest cursor that was shown part of it.
    assert [request.character for request in announced] == [len(LINE) + 1]
    # Turned off, a request waits for the whole suggestion.
    waiting = CompletionService(Settings(time_budget_ms=5000, partial_answer_ms=0),
                                FakeEngine(token_ms=50))
    assert (await waiting.complete(typed(""))).text == "_done(1)"
    pipeline.close()
    waiting.close()


class RecordingEngine(FakeEngine):
    """The fake engine, keeping every request it was given."""

    def __init__(self) -> None:
        super().__init__(token_ms=1)
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> GenerationResult:
        self.requests.append(request)
        return super().generate(request, cancel)


async def test_definitions_from_workspace_files_reach_the_engine_before_the_file(
        tmp_path: Path) -> None:
    (tmp_path / "shapes.py").write_text("class Circle:\n    def area(self):\n        return 1\n")
    (tmp_path / "unrelated.py").write_text("def other(): pass\n")
    engine = RecordingEngine()
    completions = CompletionService(Settings(context_sources="definitions"), engine)
    completions.open_workspace([tmp_path.as_uri()])
    deadline = time.monotonic() + 20
    while not completions.crossfile.index.find("Circle") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    text = "from .shapes import Circle\n\nshape = \n"
    uri = (tmp_path / "user.py").as_uri()
    completions.document_changed(uri, "python", text)
    await completions.complete(CompletionRequest(uri, "python", text, 2, len("shape = ")))
    repo = engine.requests[-1].repo
    assert repo is not None and repo.name == tmp_path.name and repo.path == "user.py"
    assert repo.files == (("shapes.py", "class Circle:\n    def area(self):"),)
    # Turned off, nothing from other files is sent.
    completions.update_settings(Settings(context_sources="none"))
    await completions.complete(CompletionRequest(uri, "python", text + "x", 2, len("shape = ")))
    assert engine.requests[-1].repo is None
    completions.close()


async def test_usages_from_workspace_files_reach_the_engine(tmp_path: Path) -> None:
    (tmp_path / "shapes.py").write_text("def area(shape):\n    return 1\n")
    (tmp_path / "report.py").write_text("from shapes import area\ntotal = area(square) + 1\n")
    engine = RecordingEngine()
    completions = CompletionService(Settings(context_sources="definitions"), engine)
    completions.open_workspace([tmp_path.as_uri()])
    assert await _until(lambda: len(completions.crossfile.index.files()) == 2)
    assert completions.crossfile.index.counts().usages == 0  # kept only for `usages`
    completions.update_settings(Settings(context_sources="usages"))  # read again, with them
    assert await _until(lambda: completions.crossfile.index.counts().usages == 2)
    text = "from shapes import area\n\nsize = \n"
    uri = (tmp_path / "user.py").as_uri()
    completions.document_changed(uri, "python", text)
    await completions.complete(CompletionRequest(uri, "python", text, 2, len("size = ")))
    repo = engine.requests[-1].repo
    assert repo is not None and sorted(repo.files) == [
        ("report.py", "total = area(square) + 1"), ("shapes.py", "def area(shape):")]
    completions.close()


async def test_the_names_of_a_workspace_module_reach_the_engine_after_module_dot(
        tmp_path: Path) -> None:
    (tmp_path / "shapes.py").write_text("def zq_area(s): pass\nUNIT = 'cm'\n")
    engine = RecordingEngine()
    completions = CompletionService(Settings(context_sources="usages"), engine)
    completions.open_workspace([tmp_path.as_uri()])
    assert await _until(lambda: len(completions.crossfile.index.files()) == 1)
    text = "import shapes\n\nsize = shapes.zq\n"
    uri = (tmp_path / "user.py").as_uri()
    completions.document_changed(uri, "python", text)
    await completions.complete(CompletionRequest(uri, "python", text, 2, len("size = shapes.zq")))
    names = engine.requests[-1].names
    assert names is not None and (names.typed, names.names) == ("zq", ("zq_area",))
    await completions.complete(CompletionRequest(uri, "python", text, 2, len("size = ")))
    assert engine.requests[-1].names is None  # not after `module.`
    completions.update_settings(Settings(context_sources="usages", constrain_names=False))
    await completions.complete(CompletionRequest(uri, "python", text + "#", 2,
                                                 len("size = shapes.zq")))
    assert engine.requests[-1].names is None
    completions.close()


async def test_yanked_text_reaches_the_engine_with_the_recent_source() -> None:
    engine = RecordingEngine()
    completions = CompletionService(Settings(context_sources="recent"), engine)
    completions.open_workspace(["file:///work"])
    user = "file:///work/user.py"
    completions.document_changed(user, "python", "value = \n")
    completions.yanked("file:///work/lib.py", "def helper(a, b):\n    return a + b\n")
    completions.yanked("file:///work/lib.py", "x")  # too short to be context
    await completions.complete(CompletionRequest(user, "python", "value = \n", 0, 8))
    repo = engine.requests[-1].repo
    assert repo is not None and repo.files == (
        ("lib.py", "def helper(a, b):\n    return a + b"),)
    completions.close()


async def _until(check: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return check()


async def test_definitions_follow_workspace_folders_and_files_on_disk(tmp_path: Path) -> None:
    project, library = tmp_path / "project", tmp_path / "library"
    project.mkdir()
    library.mkdir()
    (library / "shapes.py").write_text("class Square:\n    def area(self):\n        return 4\n")
    engine = RecordingEngine()
    completions = CompletionService(Settings(context_sources="definitions"), engine)
    completions.open_workspace([project.as_uri()])
    index = completions.crossfile.index
    text = "from shapes import Square, Circle\n\nshape = \n"
    uri = (project / "user.py").as_uri()
    completions.document_changed(uri, "python", text)

    async def sent() -> tuple[tuple[str, str], ...]:
        request = CompletionRequest(uri, "python", text + f"# {len(engine.requests)}", 2, 8)
        await completions.complete(request)
        repo = engine.requests[-1].repo
        return () if repo is None else repo.files

    completions.change_workspace([library.as_uri()], [])  # the editor adds a folder
    assert await _until(lambda: bool(index.find("Square")))
    assert [path for path, _ in await sent()] == ["shapes.py"]
    (project / "circle.py").write_text("class Circle:\n    pass\n")  # e.g. a checkout
    completions.file_changed((project / "circle.py").as_uri(), deleted=False)
    assert await _until(lambda: bool(index.find("Circle")))
    assert sorted(path for path, _ in await sent()) == ["circle.py", "shapes.py"]
    (project / "circle.py").unlink()
    completions.file_changed((project / "circle.py").as_uri(), deleted=True)
    completions.change_workspace([], [library.as_uri()])
    assert await _until(lambda: not index.find("Circle") and not index.find("Square"))
    assert await sent() == ()
    completions.close()


async def test_a_request_shown_nothing_is_told_as_soon_as_words_come() -> None:
    """A keystroke whose budget ran out before its generation had a whole word is shown
    nothing; the editor is told to ask again when words come, not only at the end."""
    engine = FakeEngine(token_ms=400)  # "_do", "ne(", "1)": the end after 1.2 s
    pipeline = CompletionService(Settings(time_budget_ms=200, partial_answer_ms=0), engine)
    told: list[tuple[int, str | None]] = []

    def finished(request: CompletionRequest) -> None:
        hit = pipeline.cache.find(request.uri, request.text, request.character)
        told.append((request.character, None if hit is None else hit.text))

    pipeline.on_finished = finished
    first = asyncio.create_task(pipeline.complete(typed("")))
    await asyncio.sleep(0.05)
    first.cancel()  # the next keystroke came
    shown = await pipeline.complete(typed("_"))
    assert shown.text == ""  # its 200 ms ran out before the first token
    assert await _until(lambda: len(told) == 2)
    (early, cached_early), (last, cached_last) = told
    assert early == last == len(LINE) + 1
    assert cached_early != "done(1)" and cached_last == "done(1)"  # told before the end
    pipeline.close()


async def test_a_keystroke_joining_a_generation_with_words_to_show_is_answered_at_once() -> None:
    """`partial_answer_ms` is the generation's age: a keystroke that types along one which
    already shows whole words beyond it does not wait that long again."""
    engine = FakeEngine(token_ms=300)  # "_do" at 300 ms, "ne(" at 600, "1)" at 900
    pipeline = CompletionService(Settings(time_budget_ms=5000, partial_answer_ms=400), engine)
    first = await pipeline.complete(typed(""))
    assert first.finish == "partial" and first.text == "_do"  # at 400 ms
    joined = await pipeline.complete(typed("_"))
    assert (joined.source, joined.text) == ("cache", "do")  # at once, not at 800 ms
    assert await _until(lambda: pipeline.cache.lookup(URI, typed("_").text,
                                                      len(LINE) + 1) == "done(1)")
    pipeline.close()


class WedgedEngine(FakeEngine):
    """Its first generation's reply never brings a token: cut at the deadline with
    nothing, and its continuation waits until cancelled (a wedged connection)."""

    def __init__(self) -> None:
        super().__init__(token_ms=1)
        self.resumed = threading.Event()

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> GenerationResult:
        if self.calls:
            return super().generate(request, cancel)
        self.calls += 1
        while not cancel.expired() and not cancel.cancelled:
            time.sleep(0.01)
        return GenerationResult("", "deadline", Timings())

    def resume(self, cancel: CancelToken) -> GenerationResult | None:
        self.resumed.set()
        deadline = time.monotonic() + 30
        while not cancel.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        return GenerationResult("", "cancelled", Timings())


async def test_a_continuation_with_nothing_does_not_hold_the_next_keystroke() -> None:
    engine = WedgedEngine()
    pipeline = CompletionService(Settings(time_budget_ms=400, partial_answer_ms=0), engine)
    first = await pipeline.complete(typed(""))
    assert first.text == ""  # its reply brought nothing within the budget
    assert await asyncio.to_thread(engine.resumed.wait, 10)  # continued in the background
    second = await pipeline.complete(typed("_"))
    assert second.text == "_done(1)" and engine.calls == 2  # asked anew, not held
    pipeline.close()


class HeldPrefill(FakeEngine):
    """The fake engine, whose warm-ups run until they are cancelled; their tokens kept."""

    def __init__(self) -> None:
        super().__init__(token_ms=1)
        self.warm_tokens: list[CancelToken] = []
        self.warming = threading.Event()

    def prefill(self, request: GenerationRequest, cancel: CancelToken) -> int:
        self.warm_tokens.append(cancel)
        self.warming.set()
        deadline = time.monotonic() + 10
        while not cancel.cancelled and time.monotonic() < deadline:
            time.sleep(0.005)
        return 0


async def test_a_request_lets_a_warm_up_of_its_own_prompt_finish_its_chunk() -> None:
    """A request whose prompt starts as a warm-up's (the next keystroke where the cursor
    rested) stops that warm-up after its prompt chunk, whose tokens it needs; a request
    elsewhere in the document, or after a warm-up that put a short window first, aborts
    it at once."""
    engine = HeldPrefill()
    pipeline = CompletionService(Settings(), engine)
    body = "".join(f"value_{index} = {index}\n" for index in range(8))  # no short window
    rested = CompletionRequest(URI, "python", body + "total = ", 8, 8)
    typed = CompletionRequest(URI, "python", body + "total = c", 8, 9)
    elsewhere = CompletionRequest(URI, "python", body + "total = c", 2, 0)
    far = "".join(f"entry_{index} = {index}\n" for index in range(800))
    for warm, request, finishes in ((rested, typed, True), (rested, elsewhere, False),
                                    (CompletionRequest(URI, "python", far, 700, 0),
                                     CompletionRequest(URI, "python", far + "x", 800, 1),
                                     False)):
        engine.warming.clear()
        assert pipeline.prefill(warm) is not None
        assert await asyncio.to_thread(engine.warming.wait, 5)
        await pipeline.complete(request)
        token = engine.warm_tokens[-1]
        assert token.cancelled and token.aborting is not finishes
    pipeline.close()
