"""Value patterns of dataset definitions, as the XNAT datasets plugin reads them.

A value is ``/regex/`` (searched, case-sensitive), ``/regex/i`` (case-insensitive), an SQL LIKE
pattern when it holds a ``%`` (``%`` any run, ``_`` one character, the whole value must match) or
else a literal compared exactly. ``%%`` is one literal percent in either of the last two forms.
The plugin hands these to PostgreSQL; here they compile once to Python regexes. Python's ``re``
has no time limit, so patterns are capped in length, repeats or alternations inside an unbounded
repeat (``(a+)+``, ``(a|aa)*``: the shapes behind catastrophic backtracking) are refused, and
matched text is capped as well.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from xnat_ml.errors import XnatMlError

MAX_PATTERN_CHARS = 256
MAX_TEXT_CHARS = 256  # DICOM descriptions hold 64; longer values are compared truncated

# PostgreSQL bracket classes that Python's re lacks, as Python spells them inside brackets.
_POSIX_CLASSES = {
    "[:alpha:]": "a-zA-Z",
    "[:digit:]": "0-9",
    "[:alnum:]": "a-zA-Z0-9",
    "[:upper:]": "A-Z",
    "[:lower:]": "a-z",
    "[:space:]": r"\s",
    "[:punct:]": r"!-/:-@\[-`{-~",
    "[:xdigit:]": "0-9A-Fa-f",
    "[:word:]": r"\w",
}
_POSIX_CLASS = re.compile("|".join(re.escape(c) for c in _POSIX_CLASSES))


class PatternError(XnatMlError):
    """A definition value that is not a usable pattern (the message says where and why)."""


@dataclass(frozen=True)
class Pattern:
    """One compiled definition value; ``text`` is the value as written."""

    text: str
    regex: re.Pattern[str]
    search: bool  # regex values search anywhere (PostgreSQL's ~); the others match whole

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        value = value[:MAX_TEXT_CHARS]
        found = self.regex.search(value) if self.search else self.regex.fullmatch(value)
        return found is not None


def compile_pattern(text: str, where: str) -> Pattern:
    """Compile one value; ``where`` names it in errors (``criteria[0].payload.image.X[1]``)."""
    if len(text) > MAX_PATTERN_CHARS:
        raise PatternError(f"{where}: pattern longer than {MAX_PATTERN_CHARS} characters")
    if len(text) >= 2 and text.startswith("/") and (text.endswith("/") or text.endswith("/i")):
        insensitive = not text.endswith("/")
        body = text[1:-2] if insensitive else text[1:-1]
        return Pattern(text, _compile_regex(body, insensitive, text, where), search=True)
    if "%" in text.replace("%%", ""):
        return Pattern(text, re.compile(_like_to_regex(text), re.DOTALL), search=False)
    return Pattern(text, re.compile(re.escape(text.replace("%%", "%"))), search=False)


def _like_to_regex(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("%%", i):
            out.append("%")
            i += 2
            continue
        ch = text[i]
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return "".join(out)


def _compile_regex(body: str, insensitive: bool, text: str, where: str) -> re.Pattern[str]:
    if not body:
        raise PatternError(f"{where}: empty regex {text!r}")
    body = _POSIX_CLASS.sub(lambda m: _POSIX_CLASSES[m.group(0)], body)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "possible nested set" and kin are mistakes here
            compiled = re.compile(body, re.IGNORECASE if insensitive else 0)
    except (re.error, FutureWarning, DeprecationWarning) as exc:
        raise PatternError(f"{where}: bad regex {text!r}: {exc}") from None
    if _nested_unbounded(body):
        raise PatternError(
            f"{where}: regex {text!r} nests unbounded repeats (catastrophic backtracking); "
            "simplify it"
        )
    return compiled


def _nested_unbounded(body: str) -> bool:
    """Whether a repeat without bound holds another repeat or an alternation, e.g. ``(a+)+``,
    ``(a{1,3})+`` or ``(a|aa)*``: the shapes that backtrack exponentially."""
    from re import _parser  # type: ignore[attr-defined]  # the parser re itself uses

    def walk(items: object, inside: bool) -> bool:
        for op, arg in items:  # type: ignore[attr-defined]
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                _low, high, sub = arg
                if inside and high > 1:
                    return True
                if walk(sub, inside or high == _parser.MAXREPEAT):
                    return True
            elif name == "BRANCH":
                if inside or any(walk(branch, inside) for branch in arg[1]):
                    return True
            elif name == "SUBPATTERN" and walk(arg[-1], inside):
                return True
            elif name in ("ASSERT", "ASSERT_NOT") and walk(arg[1], inside):
                return True
        return False

    return walk(_parser.parse(body), False)
