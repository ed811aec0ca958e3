"""The window's token budgets count the model's tokens where a tokenizer measured the
document (`context/density.py`), and the estimate where none did."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashls.context import build_context
from flashls.context.density import SAMPLE_CHARS, TokenDensity
from flashls.context.window import CHARS_PER_TOKEN, estimate_tokens
from flashls.engine.llama import LlamaEngine
from flashls.settings import Settings

MODULE = "".join(f"def handler_{n}(request, response):\n    return response.send({n})\n"
                 for n in range(400))


class Counter:
    """A tokenizer of `chars` characters a token that records what it was given."""

    def __init__(self, chars: float | None) -> None:
        self.chars = chars
        self.samples: list[str] = []

    def __call__(self, text: str) -> int | None:
        self.samples.append(text)
        return None if self.chars is None else round(len(text) / self.chars)


def test_a_measured_density_is_kept_until_the_document_changes_much() -> None:
    counter = Counter(4.5)
    density = TokenDensity(counter)
    assert density.of("file:///a.py", MODULE, len(MODULE) // 2) == 4.5
    assert len(counter.samples[0]) == SAMPLE_CHARS  # around the cursor, not the whole file
    grown = MODULE + "x = 1\n" * 100
    assert density.of("file:///a.py", grown, 10) == 4.5
    assert len(counter.samples) == 1  # typing does not measure again
    counter.chars = 3.0
    assert density.of("file:///a.py", MODULE * 2, 10) == 3.0  # twice as long: measured again
    density.forget("file:///a.py")
    counter.chars = 5.0
    assert density.of("file:///a.py", MODULE * 2, 10) == 5.0


def test_without_a_tokenizer_the_estimate_counts_and_nothing_is_kept() -> None:
    counter = Counter(None)
    density = TokenDensity(counter)
    assert density.of("file:///a.py", MODULE, 0) == CHARS_PER_TOKEN
    counter.chars = 4.0  # the model has loaded since
    assert density.of("file:///a.py", MODULE, 0) == 4.0
    density.reset()  # another model
    counter.chars = 2.5
    assert density.of("file:///a.py", MODULE, 0) == 2.5
    assert TokenDensity(Counter(4.0)).of("file:///b.py", "   \n\n", 0) == CHARS_PER_TOKEN


def test_the_window_holds_the_budget_in_the_document_s_tokens() -> None:
    cursor = MODULE.index("def handler_300")
    for density in (CHARS_PER_TOKEN, 4.5):
        context = build_context(MODULE, cursor, language_id="python", tree=None,
                                prefix_budget=1000, suffix_budget=300, multiline="auto",
                                density=density)
        # Anchoring drops up to a quarter of the lines (`window.py`).
        assert 750 < estimate_tokens(context.prefix, density) <= 1000
        assert 200 < estimate_tokens(context.suffix, density) <= 300


def test_the_real_tokenizer_counts_and_the_window_fills_its_budget(model_path: Path) -> None:
    engine = LlamaEngine(Settings(model=str(model_path), n_threads=2))
    assert engine.count_tokens(MODULE) is None  # not loaded yet
    engine.load()
    try:
        source = Path(__file__).parents[1].joinpath("flashls", "service.py").read_text()
        density = TokenDensity(engine.count_tokens).of("file:///service.py", source, 30_000)
        assert 3.5 < density < 6.0  # Python, Qwen2.5-Coder's tokenizer
        cursor = 30_000
        context = build_context(source, cursor, language_id="python", tree=None,
                                prefix_budget=1536, suffix_budget=512, multiline="auto",
                                density=density)
        counted = engine.count_tokens(context.prefix)
        assert counted is not None and 1536 * 0.8 < counted < 1536 * 1.2
    finally:
        engine.close()
    assert engine.count_tokens(MODULE) is None


@pytest.mark.parametrize("chars", [1.0, 100.0])
def test_a_density_stays_within_bounds(chars: float) -> None:
    assert 1.5 <= TokenDensity(Counter(chars)).of("file:///a.py", MODULE, 0) <= 8.0
