"""Context extraction: what text around the cursor goes into the prompt.

Parsing lives in `syntax`, grammars in `languages`, the budgeted window in `window`, the
brackets open at the cursor in `brackets`.
"""

from flashls.context.languages import language_of_path
from flashls.context.syntax import SyntaxTrees
from flashls.context.window import (
    CompletionContext,
    WindowHeads,
    build_context,
    identifier_before,
    position_to_offset,
)

__all__ = ["CompletionContext", "SyntaxTrees", "WindowHeads", "build_context",
           "identifier_before", "language_of_path", "position_to_offset"]
