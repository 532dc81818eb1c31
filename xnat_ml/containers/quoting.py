"""Values substituted into a command line reach the program as the literal text given.

XNAT's Container Service pastes values into the command line as they are and runs it with
`/bin/sh -c` inside a container. Here the same line may run on the server's own host (the local
backend, Slurm), where a value such as `x; rm -rf ~` would be a command. So each value is quoted
for the shell context its replacement key sits in, in the admin's template:

- bare (`--in #FILE#`): `shlex.quote`;
- inside single quotes (`'#NAME#'`): each `'` becomes `'\\''`;
- inside double quotes (`"#NAME#"`): `\\`, `"`, `$` and backquote get a backslash;
- inside `$(...)`: as at the top level (quotes nest there).

Keys where no quoting keeps a value literal (inside backquotes or `${...}`, after a backslash,
in a here-document) are refused. Text the admin wrote (flags, separators, boolean true/false
values) is spliced as it is; so are inputs the server was told to splice raw (`raw_inputs`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from xnat_ml.errors import XnatMlError

MASK = "*****"


class Literal(str):
    """A value that must reach the program as exactly this text (quoted where it lands)."""


class QuotingError(XnatMlError):
    """A replacement key sits where its value cannot be quoted."""


def quote_for(text: str, context: str) -> str:
    """`text` quoted so that, in shell `context` ("bare", "single", "double"), it stays literal."""
    if context == "single":
        return text.replace("'", "'\\''")
    if context == "double":
        return re.sub(r'([\\"$`])', r"\\\1", text)
    return shlex.quote(text)


def substitute_line(template: str, pieces: Mapping[str, Sequence[str]]) -> str:
    """The command line with each replacement key replaced by its piece: a sequence of admin text
    (plain `str`, spliced as is) and values (`Literal`, quoted for where the key sits)."""
    if not template or not pieces:
        return template
    keys = re.compile("|".join(re.escape(k) for k in sorted(pieces, key=len, reverse=True)))
    return "".join(
        template[start:end] if context is None else _render(template[start:end], pieces, context)
        for start, end, context in _key_contexts(template, keys)
    )


def _render(key: str, pieces: Mapping[str, Sequence[str]], context: str) -> str:
    piece = pieces[key]
    if context.startswith("refused:"):
        if any(isinstance(part, Literal) for part in piece):
            raise QuotingError(
                f"command-line: replacement key {key} sits {context[8:]}, where no quoting keeps "
                "a value literal; move it out (or have the server splice this input raw)"
            )
        context = "bare"
    return "".join(quote_for(p, context) if isinstance(p, Literal) else p for p in piece)


def _key_contexts(template: str, keys: re.Pattern) -> list[tuple[int, int, str | None]]:
    """Split `template` into (start, end, context) spans: context None for template text, else the
    shell context of the replacement key at that span ("bare", "single", "double", or
    "refused:<where>"). A small lexer of POSIX sh quoting: quotes, backslashes, comments,
    `$(...)` (nested), `${...}`, backquotes and here-documents."""
    spans: list[tuple[int, int, str | None]] = []
    stack: list[list] = [["bare", 0]]  # frames: [kind, open parentheses inside a $( frame]
    heredoc = False
    text_start = i = 0
    n = len(template)
    while i < n:
        frame = stack[-1]
        kind = frame[0]
        match = keys.match(template, i)
        if match:
            if text_start < i:
                spans.append((text_start, i, None))
            context = {"bare": "bare", "subst": "bare", "single": "single", "double": "double",
                       "backquote": "refused:inside backquotes",
                       "brace": "refused:inside ${...}"}[kind]  # fmt: skip
            if heredoc and kind in ("bare", "subst"):
                context = "refused:after a here-document (<<)"
            spans.append((match.start(), match.end(), context))
            i = text_start = match.end()
            continue
        char = template[i]
        pair = template[i : i + 2]
        if kind == "single":
            if char == "'":
                stack.pop()
        elif char == "\\":
            escaped = keys.match(template, i + 1)
            if escaped:
                spans.append((text_start, i + 1, None))
                spans.append((i + 1, escaped.end(), "refused:after a backslash"))
                i = text_start = escaped.end()
                continue
            i += 1  # the escaped character never changes the context
        elif kind == "backquote":
            if char == "`":
                stack.pop()
        elif kind == "brace":
            if char == "}":
                stack.pop()
        elif pair == "$(":
            stack.append(["subst", 0])
            i += 1
        elif pair == "${":
            stack.append(["brace", 0])
            i += 1
        elif char == "`":
            stack.append(["backquote", 0])
        elif kind == "double":
            if char == '"':
                stack.pop()
        elif char == "'":
            stack.append(["single", 0])
        elif char == '"':
            stack.append(["double", 0])
        elif pair == "<<":
            heredoc = True
            i += 1
        elif char == "#" and (i == 0 or template[i - 1] in " \t\n;&|()<>"):
            end = template.find("\n", i)
            i = n if end < 0 else end  # a comment: its quotes open nothing
            continue
        elif kind == "subst" and char == "(":
            frame[1] += 1
        elif kind == "subst" and char == ")":
            if frame[1] == 0:
                stack.pop()
            else:
                frame[1] -= 1
        i += 1
    if text_start < n:
        spans.append((text_start, n, None))
    return spans


def mask_line(template: str, pieces: Mapping[str, Sequence[str]], secret: set[str]) -> str:
    """The command line as users may read it: the values of `secret` keys shown as *****."""
    shown = {
        key: [Literal(MASK) if isinstance(p, Literal) else p for p in piece]
        if key in secret
        else piece
        for key, piece in pieces.items()
    }
    return substitute_line(template, shown)


def raw(piece: Sequence[str]) -> list[str]:
    """A piece whose values are spliced as they are (the admin's explicit choice per input)."""
    return [str(p) for p in piece]
