"""Regular expressions that users write, compiled by RE2: matching time is linear in the text
whatever the pattern, so ``a*a*a*a*b`` or ``(a+)+b`` on a long value costs microseconds where
Python's backtracking ``re`` takes minutes.

RE2 has no backreferences, lookaround, atomic groups or possessive repeats (they are what needs
backtracking); a pattern using them is refused in one line saying so. Callers here only ask
"does it match?", so :class:`LinearRegex` calls RE2's program directly: google-re2's ``re``-like
wrapper builds match objects and offset tables at ~20 µs a call, too slow for a dataset build
that matches every file of thousands of sessions.
"""

from __future__ import annotations

import re

import re2
from re2 import _re2  # the compiled program behind re2.compile (google-re2 1.x)

from xnat_ml.errors import XnatMlError

# Guards the compiled program's size: a pattern of a few hundred characters fits in far less.
_MAX_MEM = 8 * 2**20
_SEEN_MAX = 4096  # answers kept per pattern
_SEARCH = re2._Anchor.UNANCHORED
_WHOLE = re2._Anchor.ANCHOR_BOTH


# What RE2 refuses because only backtracking can match it: named in the refusal.
_BACKTRACKING = (
    ("backreferences", re.compile(r"\\[1-9]|\(\?P=|\\[gk]<")),
    ("lookahead and lookbehind", re.compile(r"\(\?<?[=!]")),
    ("atomic groups", re.compile(r"\(\?>")),
    ("possessive repeats", re.compile(r"[*+?}]\+")),
)


class RegexError(XnatMlError, ValueError):
    """A pattern RE2 cannot take; the message says why, without naming the pattern's place."""


class LinearRegex:
    """A compiled pattern answering ``search`` / ``fullmatch`` with True or False."""

    __slots__ = ("pattern", "ignore_case", "dot_all", "_program", "_seen")

    def __init__(self, pattern: str, ignore_case: bool, dot_all: bool, program: _re2.RE2) -> None:
        self.pattern = pattern
        self.ignore_case = ignore_case
        self.dot_all = dot_all
        self._program = program
        # Archive values repeat (scan types, resource labels, file names): answers are kept.
        self._seen: dict[tuple[object, str], bool] = {}

    def __eq__(self, other: object) -> bool:  # as re.Pattern: equal when compiled alike
        return isinstance(other, LinearRegex) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r}, ignore_case={self.ignore_case})"

    def _key(self) -> tuple[str, bool, bool]:
        return (self.pattern, self.ignore_case, self.dot_all)

    def search(self, text: str) -> bool:
        return self._run(_SEARCH, text)

    def fullmatch(self, text: str) -> bool:
        return self._run(_WHOLE, text)

    def _run(self, anchor: object, text: str) -> bool:
        key = (anchor, text)
        found = self._seen.get(key)
        if found is None:
            data = text.encode("utf-8", "surrogatepass")
            found = self._program.Match(anchor, data, 0, len(data))[0][0] >= 0
            if len(self._seen) >= _SEEN_MAX:
                self._seen.clear()
            self._seen[key] = found
        return found


def escape(text: str) -> str:
    """``text`` as a pattern matching exactly itself."""
    return re2.escape(text)


def compile_linear(body: str, ignore_case: bool = False, dot_all: bool = False) -> LinearRegex:
    """Compile ``body`` for RE2; RegexError saying why not."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print its own copy of the error on stderr
    options.case_sensitive = not ignore_case
    options.dot_nl = dot_all
    options.never_capture = True  # only "does it match" is asked
    options.max_mem = _MAX_MEM
    program = _re2.RE2(body.encode("utf-8", "surrogatepass"), options)
    if program.ok():
        return LinearRegex(body, ignore_case, dot_all, program)
    reason = program.error()
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    reason = str(reason).strip() or "not a regular expression"
    feature = next((name for name, shape in _BACKTRACKING if shape.search(body)), None)
    if feature:
        raise RegexError(
            f"{reason}: {feature} are not supported (matching must take linear time)"
        )
    raise RegexError(reason)
