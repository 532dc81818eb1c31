"""Value patterns of dataset definitions, as the XNAT datasets plugin reads them.

A value is ``/regex/`` (searched, case-sensitive), ``/regex/i`` (case-insensitive), an SQL LIKE
pattern when it holds a ``%`` (``%`` any run, ``_`` one character, the whole value must match) or
else a literal compared exactly. ``%%`` is one literal percent in either of the last two forms.
The plugin hands these to PostgreSQL; here every form compiles once to an RE2 program
(xnat_ml/linear_regex.py), whose matching time is linear in the value: no pattern, however
written (``%a%a%a%a%b``, ``/(a+)+b/``), can backtrack. Patterns and matched text are capped in
length all the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from xnat_ml.errors import XnatMlError
from xnat_ml.linear_regex import LinearRegex, RegexError, compile_linear, escape

MAX_PATTERN_CHARS = 256
MAX_TEXT_CHARS = 256  # DICOM descriptions hold 64; longer values are compared truncated


class PatternError(XnatMlError):
    """A definition value that is not a usable pattern (the message says where and why)."""


@dataclass(frozen=True)
class Pattern:
    """One compiled definition value; ``text`` is the value as written."""

    text: str
    regex: LinearRegex | None  # None: a literal, compared as a string
    search: bool = False  # regex values search anywhere (PostgreSQL's ~); the others match whole
    literal: str = ""

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        value = value[:MAX_TEXT_CHARS]
        if self.regex is None:
            return value == self.literal
        return self.regex.search(value) if self.search else self.regex.fullmatch(value)


def compile_pattern(text: str, where: str) -> Pattern:
    """Compile one value; ``where`` names it in errors (``criteria[0].payload.image.X[1]``)."""
    if len(text) > MAX_PATTERN_CHARS:
        raise PatternError(f"{where}: pattern longer than {MAX_PATTERN_CHARS} characters")
    if len(text) >= 2 and text.startswith("/") and (text.endswith("/") or text.endswith("/i")):
        insensitive = not text.endswith("/")
        body = text[1:-2] if insensitive else text[1:-1]
        return Pattern(text, _compile_regex(body, insensitive, text, where), search=True)
    if "%" in text.replace("%%", ""):
        return Pattern(text, compile_linear(_like_to_regex(text), dot_all=True))
    return Pattern(text, None, literal=text.replace("%%", "%"))


def _like_to_regex(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("%%", i):
            out.append("%")
            i += 2
            continue
        ch = text[i]
        out.append(".*" if ch == "%" else "." if ch == "_" else escape(ch))
        i += 1
    return "".join(out)


def _compile_regex(body: str, insensitive: bool, text: str, where: str) -> LinearRegex:
    if not body:
        raise PatternError(f"{where}: empty regex {text!r}")
    try:
        return compile_linear(body, ignore_case=insensitive)
    except RegexError as exc:
        raise PatternError(f"{where}: bad regex {text!r}: {exc}") from None
