"""Regular expressions that users write, compiled by RE2: matching time is linear in the text
whatever the pattern, so ``a*a*a*a*b`` or ``(a+)+b`` on a long value costs microseconds where
Python's backtracking ``re`` takes minutes.

RE2 has no backreferences, lookaround, atomic groups or possessive repeats (they are what needs
backtracking); a pattern using them is refused in one line saying so.
"""

from __future__ import annotations

import re
from typing import Any

import re2

from xnat_ml.errors import XnatMlError

# Guards the compiled program's size: a pattern of a few hundred characters fits in far less.
_MAX_MEM = 8 * 2**20


class RegexError(XnatMlError, ValueError):
    """A pattern RE2 cannot take; the message says why, without naming the pattern's place."""


def escape(text: str) -> str:
    """``text`` as a pattern matching exactly itself."""
    return re2.escape(text)


def compile_linear(body: str, ignore_case: bool = False, dot_all: bool = False) -> Any:
    """Compile ``body`` for RE2 (``.search``, ``.fullmatch`` as in ``re``); RegexError if not."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print its own copy of the error on stderr
    options.case_sensitive = not ignore_case
    options.max_mem = _MAX_MEM
    options.dot_nl = dot_all
    try:
        return re2.compile(body, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        reason = str(reason).strip() or "not a regular expression"
    try:
        re.compile(body)
    except re.error as exc:
        raise RegexError(str(exc)) from None
    raise RegexError(
        f"{reason}: backreferences, lookaround and possessive or atomic repeats are not "
        "supported (matching must take linear time)"
    )
