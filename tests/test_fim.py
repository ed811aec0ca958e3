"""Fill-in-the-middle formats and their detection from a model's metadata and vocabulary."""

from __future__ import annotations

import pytest

from flashls.fim import FORMATS, UnknownFormat, detect_format, format_named


def vocabulary(*markers: str) -> set[str]:
    return set(markers)


def test_qwen_detected_by_sentinels() -> None:
    vocab = vocabulary("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
    fmt = detect_format({"general.architecture": "qwen2"}, vocab.__contains__)
    assert fmt.name == "qwen"
    assert fmt.render("a", "b") == "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"


def test_same_sentinels_told_apart_by_architecture() -> None:
    vocab = vocabulary("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
    assert detect_format({"general.architecture": "gemma"}, vocab.__contains__).name == \
        "codegemma"


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_is_detected_from_its_own_sentinels(name: str) -> None:
    fmt = FORMATS[name]
    vocab = vocabulary(*fmt.sentinels())
    metadata = {"general.architecture": (fmt.architectures or ("llama",))[0],
                "general.name": name}
    assert detect_format(metadata, vocab.__contains__).name == name


def test_codestral_puts_suffix_first() -> None:
    assert format_named("codestral").render("P", "S") == "[SUFFIX]S[PREFIX]P[MIDDLE]"


def test_unknown_model_names_the_setting() -> None:
    with pytest.raises(UnknownFormat, match="fim_format"):
        detect_format({"general.architecture": "mamba"}, lambda marker: False)
    with pytest.raises(UnknownFormat):
        format_named("nope")
