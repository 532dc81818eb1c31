"""XNAT search documents (`xdat:bundle` / `xdat:search`), as pyxnat and xnatpy POST them.

A document names a root datatype (one result row per object of that type), the fields to show
(`search_field`: element_name + field_ID) and the criteria (`search_where`: `criteria` and nested
`child_set`s, each set joined by its `method`, AND or OR). Parsed with defusedxml (no DTD, no
entities), bounded in size, nesting and number of criteria; anything else is a 400 naming the
problem. What the fields mean is the store's business (store/search_query.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from werkzeug.exceptions import BadRequest

XDAT = "http://nrg.wustl.edu/security"
MAX_SEARCH_BYTES = 256 * 1024
MAX_DEPTH = 16  # nested child_sets
MAX_CRITERIA = 500
MAX_FIELDS = 200
MAX_VALUE = 1024

# comparison_type as clients write it (xnatpy pads LIKE with spaces) → canonical operator.
OPERATORS = {
    "=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
    "LIKE": "LIKE", "NOT LIKE": "NOT LIKE", "IS NULL": "IS NULL", "IS NOT NULL": "IS NOT NULL",
}  # fmt: skip


@dataclass(frozen=True)
class FieldRef:
    """A datatype's field: `xnat:subjectData` + `SUBJECT_ID` (or an xpath such as `label`)."""

    element: str
    field: str

    def __str__(self) -> str:
        return f"{self.element}/{self.field}"


@dataclass(frozen=True)
class Criterion:
    field: FieldRef
    operator: str  # a value of OPERATORS
    value: str


@dataclass(frozen=True)
class CriteriaSet:
    method: str  # AND or OR
    items: tuple[Criterion | CriteriaSet, ...]


@dataclass(frozen=True)
class SearchDocument:
    root: str
    fields: tuple[FieldRef, ...]
    where: CriteriaSet
    brief_description: str = ""
    description: str = ""
    allowed_users: tuple[str, ...] = ()


def parse_search(body: bytes) -> SearchDocument:
    """The search a document describes; 400 naming the problem when it is not one."""
    if len(body) > MAX_SEARCH_BYTES:
        raise BadRequest(f"Search XML: larger than {MAX_SEARCH_BYTES} bytes.")
    if not body.strip():
        raise BadRequest("Search XML: the request body is empty; POST an xdat:bundle document.")
    try:
        root = fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise BadRequest(
            f"Search XML: refused ({exc}); DTDs and entities are not allowed."
        ) from None
    except ParseError as exc:
        raise BadRequest(f"Search XML: not well-formed ({exc}).") from None
    if _local(root.tag) not in ("bundle", "search"):
        raise BadRequest(f"Search XML: root element {root.tag!r} is not xdat:bundle.")
    root_name = _text(_child(root, "root_element_name"), "root_element_name")
    if not root_name:
        raise BadRequest("Search XML: xdat:root_element_name is missing.")
    fields = tuple(_search_field(node) for node in _children(root, "search_field"))
    if len(fields) > MAX_FIELDS:
        raise BadRequest(f"Search XML: more than {MAX_FIELDS} search fields.")
    counter = [0]
    sets = [_criteria_set(node, 1, counter) for node in _children(root, "search_where")]
    where = sets[0] if len(sets) == 1 else CriteriaSet("AND", tuple(sets))
    users = tuple(
        _text(login, "login")
        for node in _children(root, "allowed_user")
        for login in _children(node, "login")
    )
    return SearchDocument(
        root=root_name,
        fields=fields,
        where=where,
        brief_description=root.get("brief-description", ""),
        description=root.get("description", ""),
        allowed_users=tuple(u for u in users if u),
    )


def _search_field(node) -> FieldRef:
    element = _text(_child(node, "element_name"), "element_name")
    field = _text(_child(node, "field_ID"), "field_ID")
    if not element or not field:
        raise BadRequest("Search XML: a search_field needs element_name and field_ID.")
    return FieldRef(element, field)


def _criteria_set(node, depth: int, counter: list[int]) -> CriteriaSet:
    if depth > MAX_DEPTH:
        raise BadRequest(f"Search XML: criteria nested deeper than {MAX_DEPTH} levels.")
    method = (node.get("method") or "AND").strip().upper()
    if method not in ("AND", "OR"):
        raise BadRequest(f"Search XML: method {node.get('method')!r} is not AND or OR.")
    items: list[Criterion | CriteriaSet] = []
    for child in node:
        name = _local(child.tag)
        if name == "criteria":
            counter[0] += 1
            if counter[0] > MAX_CRITERIA:
                raise BadRequest(f"Search XML: more than {MAX_CRITERIA} criteria.")
            items.append(_criterion(child))
        elif name == "child_set":
            items.append(_criteria_set(child, depth + 1, counter))
        else:
            raise BadRequest(f"Search XML: unexpected element {name!r} in the criteria.")
    return CriteriaSet(method, tuple(items))


def _criterion(node) -> Criterion:
    path = _text(_child(node, "schema_field"), "schema_field")
    element, _, field = path.partition("/")
    if ":" not in element or not field:
        raise BadRequest(
            f"Search XML: schema_field {path[:100]!r} is not datatype/field "
            "(e.g. xnat:subjectData/SUBJECT_ID)."
        )
    raw = _text(_child(node, "comparison_type"), "comparison_type")
    value = _text(_child(node, "value"), "value")
    operator = OPERATORS.get(" ".join(raw.upper().split()))
    if operator is None and " ".join(raw.upper().split()) == "IS":  # XNAT's IS + NULL/NOT NULL
        operator = OPERATORS.get(f"IS {' '.join(value.upper().split())}")
    if operator is None:
        raise BadRequest(
            f"Search XML: comparison_type {raw[:40]!r} of {path[:100]} is not one of "
            f"{', '.join(sorted(set(OPERATORS.values())))}."
        )
    return Criterion(FieldRef(element, field), operator, value)


def _text(node, what: str) -> str:
    text = (node.text or "").strip() if node is not None else ""
    if len(text) > MAX_VALUE:
        raise BadRequest(f"Search XML: {what} is longer than {MAX_VALUE} characters.")
    return text


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(node, name: str) -> list:
    return [child for child in node if _local(child.tag) == name]


def _child(node, name: str):
    found = _children(node, name)
    return found[0] if found else None
