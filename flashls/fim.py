"""Fill-in-the-middle prompt formats by model family, and how to tell a model's family.

Formats say which sentinel tokens frame the prefix and suffix, in which order, and which
tokens end a completion. Building token sequences happens in the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FimFormat:
    """One model family's fill-in-the-middle template."""

    name: str
    prefix_marker: str
    suffix_marker: str
    middle_marker: str
    # "psm": prefix, suffix, middle. "spm": suffix first (Codestral's training order).
    order: str = "psm"
    stop_markers: tuple[str, ...] = ()
    # Text put between the prefix marker and the prefix (CodeLlama wants a space).
    prefix_spacing: str = ""
    architectures: tuple[str, ...] = ()
    # Repository-level layout (files of the project before the FIM part), where the model
    # was trained with one: the repository-name and file-separator markers.
    repo_marker: str = ""
    file_marker: str = ""

    @property
    def has_repo_layout(self) -> bool:
        return bool(self.file_marker)

    def render_repo(self, name: str, files: Sequence[tuple[str, str]], path: str) -> str:
        """The text before the prefix marker: the repository, its other files, then the
        current file's path; empty where the format has no repository layout."""
        if not self.has_repo_layout or not files:
            return ""
        parts = [f"{self.repo_marker}{name}\n" if self.repo_marker else ""]
        parts += [f"{self.file_marker}{other}\n{text}\n" for other, text in files]
        parts.append(f"{self.file_marker}{path}\n")
        return "".join(parts)

    def sentinels(self) -> tuple[str, str, str]:
        """The three markers, in the order they must appear in the vocabulary."""
        return self.prefix_marker, self.suffix_marker, self.middle_marker

    def render(self, prefix: str, suffix: str) -> str:
        """The prompt as text, for remote servers and for logs."""
        if self.order == "spm":
            return (f"{self.suffix_marker}{suffix}{self.prefix_marker}{self.prefix_spacing}"
                    f"{prefix}{self.middle_marker}")
        return (f"{self.prefix_marker}{self.prefix_spacing}{prefix}{self.suffix_marker}"
                f"{suffix}{self.middle_marker}")


FORMATS: dict[str, FimFormat] = {
    fmt.name: fmt
    for fmt in (
        FimFormat("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                  stop_markers=("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>",
                                "<|repo_name|>", "<|im_end|>", "<|fim_prefix|>"),
                  architectures=("qwen2", "qwen3", "qwen"),
                  repo_marker="<|repo_name|>", file_marker="<|file_sep|>"),
        FimFormat("codegemma", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                  stop_markers=("<|file_separator|>", "<eos>", "<|fim_prefix|>"),
                  architectures=("gemma", "gemma2")),
        FimFormat("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
                  stop_markers=("<|endoftext|>", "<file_sep>", "<fim_prefix>"),
                  architectures=("starcoder", "starcoder2", "gpt_bigcode"),
                  repo_marker="<repo_name>", file_marker="<file_sep>"),
        FimFormat("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
                  stop_markers=("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>"),
                  architectures=("deepseek", "deepseek2")),
        FimFormat("codellama", "<PRE>", "<SUF>", "<MID>", stop_markers=("<EOT>", "</s>"),
                  prefix_spacing=" "),
        FimFormat("codestral", "[PREFIX]", "[SUFFIX]", "[MIDDLE]", order="spm",
                  stop_markers=("</s>",)),
    )
}


class UnknownFormat(ValueError):
    """The model's family could not be told, or the named format does not exist."""


def detect_format(metadata: Mapping[str, str], is_single_token: Callable[[str], bool]) -> FimFormat:
    """The format whose sentinels the vocabulary holds, settled by architecture and name."""
    candidates = [fmt for fmt in FORMATS.values()
                  if all(is_single_token(marker) for marker in fmt.sentinels())]
    architecture = metadata.get("general.architecture", "").lower()
    name = metadata.get("general.name", "").lower()
    for fmt in candidates:
        if architecture in fmt.architectures or fmt.name in name:
            return fmt
    if candidates:
        return candidates[0]
    for fmt in FORMATS.values():
        if fmt.name in name:
            return fmt
    raise UnknownFormat(
        f"cannot tell the fill-in-the-middle format of this model (architecture "
        f"{architecture or 'unknown'}, name {name or 'unknown'}); set `fim_format` to one "
        f"of {', '.join(FORMATS)}")


def format_named(name: str) -> FimFormat:
    """The registered format called `name`."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UnknownFormat(f"unknown fim_format {name!r}; known: {', '.join(FORMATS)}") from None
