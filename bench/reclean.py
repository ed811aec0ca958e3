"""What would today's post-processing make of the answers a `flashls bench repo` run recorded?

A measurement, not a feature: post-processing only cuts the text the model wrote, so
applying the current stop rule and `postprocess.clean` to a report's answers gives what the
server would now show for them, without running the model again (greedy decoding writes the
same text up to an earlier stop; the window settings are the defaults, as in `bench repo`,
single-line as it asks):

    .venv/bin/python bench/reclean.py bench/reports/repo-<stamp>.json

It prints, per variant, the exact matches before and after and each answer that changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from flashls.bench.repo_metrics import score
from flashls.bench.repo_sites import Site, masked_document
from flashls.context import SyntaxTrees, build_context, position_to_offset
from flashls.postprocess import clean, stop_rule
from flashls.settings import Settings

_SITE_FIELDS = {field.name for field in dataclasses.fields(Site)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="repo-<stamp>.json files")
    args = parser.parse_args()
    settings = Settings()
    for path in args.reports:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        for variant in report["variants"]:
            before = after = scored = 0
            for record in report["sites"]:
                answer = record.get("answers", {}).get(variant) or {}
                if answer.get("text") is None:
                    continue
                site = Site(**{k: v for k, v in record.items() if k in _SITE_FIELDS})
                text = masked_document(site)
                cursor = position_to_offset(text, site.line, site.character)
                assert cursor is not None
                tree = SyntaxTrees().update(site.path, "python", text)
                context = build_context(
                    text, cursor, language_id="python", tree=tree,
                    prefix_budget=settings.prefix_budget_tokens,
                    suffix_budget=settings.suffix_budget_tokens, multiline="never")
                cut = stop_rule(context, settings.max_lines)(answer["text"])
                now = clean(answer["text"] if cut is None else answer["text"][:cut], context)
                was_exact = score(answer["text"], site.target).exact_match
                is_exact = score(now, site.target).exact_match
                scored += 1
                before += was_exact
                after += is_exact
                if now != answer["text"]:
                    print(f"  {variant} {site.module}:{site.line + 1} {answer['text']!r} -> "
                          f"{now!r} (target {site.target!r}){' now exact' * is_exact}"
                          f"{' no longer exact' * (was_exact and not is_exact)}")
            print(f"{path} {variant}: {scored} answers, exact {before} -> {after}")


if __name__ == "__main__":
    main()
