"""Container Service matchers: JSONPath filter expressions evaluated against one XNAT object's JSON.

XNAT writes them in Jayway JsonPath's filter syntax, without the surrounding `[?( )]`:
`@.label == 'DICOM'`, `'DICOM' in @.resources[*].label`, `@.scan-type =~ /t1.*/i`, joined with
`&&`, `||`, `!` and parentheses. jsonpath-ng evaluates the `@.path` operands (its parser does
not know Jayway's operators, nor property names with dashes such as `scan-type`), and this module
evaluates the operators between them with Jayway's semantics: a path with a wildcard yields a list,
a path to a missing property makes every comparison false.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonpath_ng.jsonpath import Child, Descendants, Fields, Index, Root, Wildcard

from xnat_ml.linear_regex import LinearRegex, RegexError, compile_linear

MAX_MATCHER_LENGTH = 4096
MAX_MATCHER_DEPTH = 32  # nested `(`, `[` and `!`: the parser recurses once per level


class MatcherError(ValueError):
    """A matcher that does not parse; the message says where."""


MISSING = object()

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<path>[@$](?:\.\.?(?:[A-Za-z0-9_\-]+|\*)|\[(?:\*|-?\d+|'[^']*'|"[^"]*")\])*)
    | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<regex>/(?:[^/\\]|\\.)*/[a-z]*)
    | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<op>==|!=|<=|>=|=~|&&|\|\||[<>!()\[\],])
    | (?P<word>[A-Za-z]+)
    )""",
    re.VERBOSE,
)
_WORD_OPS = {"in", "nin", "subsetof", "anyof", "noneof", "contains", "size", "empty"}
_COMPARISONS = {"==", "!=", "<", "<=", ">", ">=", "=~"} | _WORD_OPS


@dataclass(frozen=True)
class _Path:
    expr: Any  # a jsonpath-ng expression rooted at Root()
    definite: bool  # no wildcard / descendant segment: yields at most one value

    def evaluate(self, obj: Any) -> Any:
        values = [m.value for m in self.expr.find(obj)]
        if self.definite:
            return values[0] if values else MISSING
        return values


@dataclass(frozen=True)
class _Regex:
    """A `/.../` operand, the right-hand side of `=~`."""

    program: LinearRegex


def compile_path(text: str, pos: int) -> _Path:
    expr: Any = Root()
    definite = True
    for seg in re.finditer(r"\.\.?(?:[A-Za-z0-9_\-]+|\*)|\[[^\]]*\]", text[1:]):
        part = seg.group(0)
        if part.startswith(".."):
            name = part[2:]
            expr = Descendants(expr, _child(name))
            definite = False
        elif part.startswith("."):
            name = part[1:]
            expr = Child(expr, _child(name))
            definite = definite and name != "*"
        else:
            inner = part[1:-1]
            if inner == "*":
                expr = Child(expr, Wildcard())
                definite = False
            elif inner[:1] in "'\"":
                expr = Child(expr, Fields(inner[1:-1]))
            else:
                expr = Child(expr, Index(int(inner)))
    return _Path(expr, definite)


def _child(name: str) -> Any:
    """`*` is every child (jsonpath-ng deprecates `Fields('*')` for that); else one field."""
    return Wildcard() if name == "*" else Fields(name)


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise MatcherError(f"unexpected {text[pos : pos + 12].strip()!r} at character {pos}")
        kind = m.lastgroup
        raw = m.group(kind)
        start = m.start(kind)
        if kind == "path":
            out.append(("val", compile_path(raw, start), start))
        elif kind == "str":
            out.append(("val", re.sub(r"\\(.)", r"\1", raw[1:-1]), start))
        elif kind == "num":
            out.append(("val", float(raw) if re.search(r"[.eE]", raw) else int(raw), start))
        elif kind == "regex":
            body, flags = raw[1:].rsplit("/", 1)
            try:  # RE2: a regex cannot backtrack for minutes on an object's value
                out.append(("val", _Regex(compile_linear(body, ignore_case="i" in flags)), start))
            except RegexError as exc:
                raise MatcherError(f"bad regular expression {raw!r}: {exc}") from None
        elif kind == "word" and raw in ("true", "false", "null"):
            out.append(("val", {"true": True, "false": False, "null": None}[raw], start))
        elif kind == "word" and raw in _WORD_OPS:
            out.append(("op", raw, start))
        elif kind == "word":
            raise MatcherError(f"unknown word {raw!r} at character {start}")
        else:
            out.append(("op", raw, start))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over the tokens; builds closures `obj -> value`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, Any, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, op: str | None = None) -> tuple[str, Any, int]:
        tok = self.peek()
        if tok is None:
            raise MatcherError("unexpected end of expression")
        if op is not None and tok != ("op", op, tok[2]):
            raise MatcherError(f"expected {op!r} at character {tok[2]}")
        self.i += 1
        return tok

    def parse(self):
        fn = self.or_()
        if self.peek() is not None:
            raise MatcherError(f"unexpected {self.peek()[1]!r} at character {self.peek()[2]}")
        return fn

    def nested(self, tok: tuple[str, Any, int]) -> None:
        """One level deeper, refused past MAX_MATCHER_DEPTH (before Python's own limit)."""
        self.depth += 1
        if self.depth > MAX_MATCHER_DEPTH:
            where = f"at character {tok[2]}"
            raise MatcherError(f"nested deeper than {MAX_MATCHER_DEPTH} levels {where}")

    def or_(self):
        terms = [self.and_()]
        while self._at_op("||"):
            self.take()
            terms.append(self.and_())
        if len(terms) == 1:
            return terms[0]
        return lambda o: any(_truthy(term(o)) for term in terms)  # flat: no depth per `||`

    def and_(self):
        terms = [self.not_()]
        while self._at_op("&&"):
            self.take()
            terms.append(self.not_())
        if len(terms) == 1:
            return terms[0]
        return lambda o: all(_truthy(term(o)) for term in terms)

    def not_(self):
        if self._at_op("!"):
            self.nested(self.take())
            inner = self.not_()
            self.depth -= 1
            return lambda o: not _truthy(inner(o))
        return self.comparison()

    def comparison(self):
        left = self.operand()
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] in _COMPARISONS:
            self.take()
            right = self.operand()
            op = tok[1]
            return lambda o: _compare(op, left(o), right(o))
        return left

    def operand(self):
        tok = self.take()
        kind, value, pos = tok
        if kind == "val":
            if isinstance(value, _Path):
                return value.evaluate
            return lambda _o: value
        if value == "(":
            self.nested(tok)
            inner = self.or_()
            self.take(")")
            self.depth -= 1
            return inner
        if value == "[":
            self.nested(tok)
            items = []
            while not self._at_op("]"):
                items.append(self.operand())
                if not self._at_op("]"):
                    self.take(",")
            self.take("]")
            self.depth -= 1
            return lambda o: [f(o) for f in items]
        raise MatcherError(f"unexpected {value!r} at character {pos}")

    def _at_op(self, op: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "op" and tok[1] == op


def _truthy(value: Any) -> bool:
    if value is MISSING or value is None or value is False:
        return False
    if isinstance(value, list):
        return len(value) > 0  # Jayway: a path filter is true when it finds something
    return True


def _compare(op: str, a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return op in ("!=", "nin", "noneof") and a is not b
    try:
        if op == "==":
            return _eq(a, b)
        if op == "!=":
            return not _eq(a, b)
        if op == "=~":
            return isinstance(b, _Regex) and isinstance(a, str) and bool(b.program.fullmatch(a))
        if op in ("<", "<=", ">", ">="):
            if isinstance(a, bool) or isinstance(b, bool) or type(a) is not type(b):
                if not (isinstance(a, int | float) and isinstance(b, int | float)):
                    return False
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        if op == "in":
            return isinstance(b, list) and any(_eq(a, x) for x in b)
        if op == "nin":
            return isinstance(b, list) and not any(_eq(a, x) for x in b)
        if op == "contains":
            if isinstance(a, str):
                return isinstance(b, str) and b in a
            return isinstance(a, list) and any(_eq(x, b) for x in a)
        if op == "subsetof":
            return isinstance(a, list) and isinstance(b, list) and all(x in b for x in a)
        if op == "anyof":
            return isinstance(a, list) and isinstance(b, list) and any(x in b for x in a)
        if op == "noneof":
            return isinstance(a, list) and isinstance(b, list) and not any(x in b for x in a)
        if op == "size":
            return isinstance(a, list | str) and isinstance(b, int) and len(a) == b
        if op == "empty":
            return isinstance(a, list | str) and (len(a) == 0) is bool(b)
    except TypeError:
        return False
    return False


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


@lru_cache(maxsize=512)
def compile_matcher(text: str):
    """Parse a matcher once; returns `obj -> bool`. Raises MatcherError naming the problem."""
    if len(text) > MAX_MATCHER_LENGTH:
        raise MatcherError(f"longer than {MAX_MATCHER_LENGTH} characters")
    if not text.strip():
        return lambda _o: True
    fn = _Parser(text).parse()
    return lambda obj: _truthy(fn(obj))


def matches(text: str | None, obj: dict) -> bool:
    """Does `obj` (an XNAT object in the Container Service's JSON shape) pass the matcher?"""
    if not text:
        return True
    return compile_matcher(text)(obj)
