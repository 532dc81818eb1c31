"""Docs cannot drift from the CLI: every `xnat-ml VERB [SUBVERB]` written as code (a fenced block
or an inline code span) in docs/*.md and README.md is a verb the parser has (and a sub-verb of
it, where the verb is a group). Prose that names the project ("xnat-ml binds ...") is not code."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from xnat_ml import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]

CODE = re.compile(r"```.*?```|`[^`]+`", re.DOTALL)  # a span may wrap onto the next line
# `xnat-ml` (or .venv/bin/xnat-ml) then a word, then maybe a second one (sub-verb or argument).
MENTION = re.compile(r"(?<![\w.-])xnat-ml +([a-z][a-z0-9-]*)(?: +([a-z][a-z0-9-]*))?")


def _subverbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _takes_words(parser: argparse.ArgumentParser) -> bool:
    """Whether a verb has positional arguments of its own (then a second word may be one)."""
    return any(not a.option_strings and not isinstance(a, argparse._SubParsersAction)
               for a in parser._actions)  # fmt: skip


def mentions() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in DOCS:
        for code in CODE.finditer(doc.read_text()):
            for line in code.group().splitlines():
                if "xnat-ml: error:" in line:  # a message quoted, not a command
                    continue
                found += [(doc.name, m.group(1), m.group(2)) for m in MENTION.finditer(line)]
    return found


def problems(found: list[tuple[str, str, str | None]]) -> list[str]:
    verbs = _subverbs(cli.build_parser())
    wrong = []
    for doc, verb, word in found:
        if verb not in verbs:
            wrong.append(f"{doc}: xnat-ml {verb}: no such verb")
            continue
        subverbs = _subverbs(verbs[verb])
        if word and subverbs and word not in subverbs and not _takes_words(verbs[verb]):
            wrong.append(f"{doc}: xnat-ml {verb} {word}: no such sub-verb "
                         f"({', '.join(sorted(subverbs))})")  # fmt: skip
    return wrong


def test_every_verb_the_docs_name_exists():
    found = mentions()
    assert len({verb for _, verb, _ in found}) >= 10  # the scan reads the docs at all
    assert problems(found) == []


@pytest.mark.parametrize("mention, problem", [
    (("x.md", "trian", None), "x.md: xnat-ml trian: no such verb"),
    (("x.md", "runs", "watch"), "x.md: xnat-ml runs watch: no such sub-verb"),
])  # fmt: skip
def test_a_verb_that_is_not_there_is_named(mention, problem):
    [line] = problems([mention])
    assert line.startswith(problem)


def test_pictures_the_docs_show_are_there():
    shown = [(doc, link) for doc in DOCS
             for link in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", doc.read_text())]  # fmt: skip
    assert ("README.md", "docs/sample-overlay.png") in [(d.name, link) for d, link in shown]
    assert [f"{d.name}: {link}" for d, link in shown if not (d.parent / link).is_file()] == []
