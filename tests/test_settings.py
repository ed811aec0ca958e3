"""The settings schema: merging, validation, CLI flags and environment variables."""

from __future__ import annotations

import argparse

from flashls import settings
from flashls.settings import Settings


def test_merge_accepts_section_and_camel_case() -> None:
    merged, problems = settings.merge(Settings(), {"flashls": {"maxTokens": 12,
                                                               "multiline": "never"}})
    assert (merged.max_tokens, merged.multiline, problems) == (12, "never", [])


def test_invalid_values_keep_defaults_and_say_why() -> None:
    merged, problems = settings.merge(Settings(), {"max_tokens": 0, "multiline": "sometimes",
                                                   "n_ctx": "lots", "bogus": 1})
    assert merged == Settings()
    assert len(problems) == 4
    assert any("max_tokens" in problem and "at least 1" in problem for problem in problems)
    assert any("bogus" in problem for problem in problems)


def test_boolean_strings_and_non_mapping() -> None:
    merged, _ = settings.merge(Settings(), {"enable": "off"})
    assert merged.enable is False
    same, problems = settings.merge(Settings(), ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert same == Settings() and problems


def test_environment_then_flags() -> None:
    from_env, problems = settings.from_environment({"FLASHLS_MAX_TOKENS": "7",
                                                    "FLASHLS_ENABLE": "false"})
    assert (from_env.max_tokens, from_env.enable, problems) == (7, False, [])
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    parsed = parser.parse_args(["--max-tokens", "9", "--no-speculative-cache"])
    flagged, problems = settings.from_arguments(parsed)
    assert (flagged.max_tokens, flagged.speculative_cache, problems) == (9, False, [])


def test_vscode_block_and_settings_table_cover_every_setting() -> None:
    names = [spec.name for spec in settings.setting_fields()]
    block = settings.vscode_configuration()["properties"]
    assert list(block) == [f"flashls.{name}" for name in names]
    assert block["flashls.multiline"]["enum"] == ["auto", "always", "never"]
    table = settings.markdown_table()
    assert all(f"`{name}`" in table for name in names)


def test_the_settings_doc_table_is_generated_from_the_schema() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "settings.md").read_text(encoding="utf-8")
    start = doc.index("<!-- settings-table:start -->\n") + len("<!-- settings-table:start -->\n")
    end = doc.index("<!-- settings-table:end -->")
    assert doc[start:end].strip() == settings.markdown_table()


def test_nulls_and_wrong_types_keep_the_value_with_one_message_each() -> None:
    merged, problems = settings.merge(Settings(), {"enable": None, "model": None,
                                                   "logLevel": 3, "tokenHealing": 1,
                                                   "fimFormat": ["qwen"]})
    assert merged == Settings()
    assert len(problems) == 5
    assert any("'enable'" in problem and "null" in problem for problem in problems)
    assert any("'model'" in problem and "null" in problem for problem in problems)


def test_thousands_of_unknown_keys_make_one_message() -> None:
    merged, problems = settings.merge(Settings(), {f"key{index}": index
                                                   for index in range(10_000)})
    assert merged == Settings()
    assert len(problems) == 1 and "10000 unknown setting(s)" in problems[0]
    assert len(problems[0]) < 200


def test_budgets_that_outgrow_the_context_are_refused() -> None:
    merged, problems = settings.merge(Settings(), {"nCtx": 512, "maxTokens": 2048})
    assert (merged.n_ctx, merged.max_tokens) == (Settings().n_ctx, Settings().max_tokens)
    assert len(problems) == 1 and "n_ctx 512 cannot hold" in problems[0]
    fitting, problems = settings.merge(Settings(), {"nCtx": 8192, "maxTokens": 2048})
    assert (fitting.n_ctx, fitting.max_tokens, problems) == (8192, 2048, [])
    assert settings.prompt_room_needed(fitting) <= fitting.n_ctx
    # Shrinking n_ctx alone under the default budgets is refused as well.
    small, problems = settings.merge(fitting, {"nCtx": 1024})
    assert small.n_ctx == 8192 and problems


def test_list_settings_take_a_comma_separated_string_or_a_list_of_strings() -> None:
    merged, problems = settings.merge(Settings(), {"disabledLanguages": ["markdown", "text"],
                                                   "disabledFiles": "docs/, *.lock"})
    assert (merged.disabled_languages, merged.disabled_files, problems) == (
        "markdown,text", "docs/, *.lock", [])
    kept, problems = settings.merge(merged, {"disabledLanguages": ["markdown", 3],
                                             "excludeFiles": {"private/": True}})
    assert kept == merged and len(problems) == 2
    assert "list of strings" in problems[0]
    from_env, problems = settings.from_environment({"FLASHLS_DISABLED_LANGUAGES": "markdown"})
    assert (from_env.disabled_languages, problems) == ("markdown", [])
    # A list is only taken where the schema says the setting is one.
    same, problems = settings.merge(Settings(), {"model": ["a.gguf"]})
    assert same == Settings() and problems
