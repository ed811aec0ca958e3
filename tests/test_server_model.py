"""`flashls serve` on the real default model, driven over stdio like an editor would."""

from __future__ import annotations

import ast
import asyncio
import contextlib

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import real_server_command
from tests.test_server import initialize_params, inline, open_document

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(
    server_command=real_server_command()))
async def client(lsp_client: LanguageClient, model_path):  # type: ignore[no-untyped-def]
    # These tests check what is suggested, not how fast: no deadline cuts under load.
    await lsp_client.initialize_session(initialize_params({"timeBudgetMs": 60000},
                                                          client="visual-studio-code"))
    yield
    await lsp_client.shutdown_session()


SOURCES = {
    "python": ("file:///w/walk.py",
               "import os\n\n\ndef python_files(root):\n    found = []\n"
               "    for directory, _, names in os.walk(root):\n        for name in names:\n"
               "            if name.endswith('.py'):\n"
               "                found.append(os.path.\n    return found\n", 8, 37),
    "javascript": ("file:///w/sum.js",
                   "function sum(values) {\n  let total = 0;\n  for (const value of values) {\n"
                   "    total += \n  }\n  return total;\n}\n", 3, 13),
    "go": ("file:///w/main.go",
           "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tnames := []string{\"a\", \"b\"}\n"
           "\tfor _, name := range names {\n\t\tfmt.Println(\n\t}\n}\n", 7, 14),
}


@pytest.mark.parametrize("language", sorted(SOURCES))
async def test_real_model_completes(client: LanguageClient, language: str) -> None:
    uri, text, line, column = SOURCES[language]
    open_document(client, text, uri=uri, language=language)
    suggestions = await inline(client, uri, line, column)
    assert len(suggestions) == 1 and suggestions[0].strip(), suggestions
    errors = [message for message in client.messages
              if message.type == types.MessageType.Error]
    assert not errors


async def test_python_suggestion_completes_the_statement(client: LanguageClient) -> None:
    uri, text, line, column = SOURCES["python"]
    finished = asyncio.Event()

    @client.feature("flashls/suggestionFinished")
    def ask_again(ls: LanguageClient, params: object) -> None:
        position = params.position  # type: ignore[attr-defined]
        if (position.line, position.character) == (line, column):
            finished.set()

    open_document(client, text, uri=uri, language="python")
    [first] = await inline(client, uri, line, column)
    # The first words come at once (a partial answer); the editor is told when the rest
    # is ready and asks again, as VS Code and Neovim do.
    # (None comes when the first answer was already whole: asking again reads the cache.)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished.wait(), 30)
    [suggestion] = await inline(client, uri, line, column)
    assert suggestion.startswith(first), (first, suggestion)
    # Not the model's exact text (CPUs differ on near-ties): accepted at the cursor, it
    # leaves valid Python and does not write the next line again.
    assert suggestion.strip() and "return found" not in suggestion, suggestion
    lines = text.splitlines(keepends=True)
    lines[line] = lines[line][:column] + suggestion + lines[line][column:]
    ast.parse("".join(lines))


async def test_nothing_past_the_end_nor_for_huge_or_binary(client: LanguageClient) -> None:
    uri = open_document(client, "x = 1\n", uri="file:///w/tiny.py")
    assert await inline(client, uri, 3, 0) == []
    huge = open_document(client, "total = 1\n" * 1_000_000, uri="file:///w/huge.py")
    assert await inline(client, huge, 10, 9) == []
    blob = open_document(client, "\x7fELF\x00\x00\x01", uri="file:///w/a.out",
                         language="plaintext")
    assert await inline(client, blob, 0, 2) == []
