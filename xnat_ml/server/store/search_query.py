"""XNAT searches as SQL: a parsed search document (formats/search_xml.py) → one SELECT.

The root datatype picks the table and its joins up the hierarchy (a scan row joins its session,
subject and project), so criteria and columns may name fields of the root's type, its supertypes
and the objects above it (`xnat:projectData/ID` in a subject search). Fields are XNAT's display
field IDs (SUBJECT_ID, LABEL, DATE...) or the datatype's xpath names (`ID`, `label`,
`xnat:mrSessionData/subject_ID` as xnatpy writes them); fields that the served XSD declares and
the store keeps in an object's `fields` are matched there, case-insensitively. Anything else is
a 400 naming the field. Rows come only from the projects the caller may read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, cast, false, func, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import Float
from werkzeug.exceptions import BadRequest

from xnat_ml.server.formats import datatypes
from xnat_ml.server.formats.listing import stored_key
from xnat_ml.server.formats.search_xml import CriteriaSet, Criterion, FieldRef, SearchDocument
from xnat_ml.server.formats.xml_writer import declared_fields
from xnat_ml.server.store import shares
from xnat_ml.server.store.models import Assessor, Experiment, Project, Scan, Subject

# Families of datatypes, each one table; a root of a family may reach the families listed.
_FAMILY_BASES = (  # first match wins: assessors are experiments too
    ("assessor", "xnat:imageAssessorData"),
    ("experiment", "xnat:subjectAssessorData"),
    ("scan", "xnat:imageScanData"),
    ("subject", "xnat:subjectData"),
    ("project", "xnat:projectData"),
)
_REACHES = {
    "project": ("project",),
    "subject": ("subject", "project"),
    "experiment": ("experiment", "subject", "project"),
    "assessor": ("assessor", "experiment", "subject", "project"),
    "scan": ("scan", "experiment", "subject", "project"),
}
_MODEL = {
    "project": Project,
    "subject": Subject,
    "experiment": Experiment,
    "assessor": Assessor,
    "scan": Scan,
}
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y")  # ISO, and xnatpy's date constraints


@dataclass(frozen=True)
class Column:
    """A searchable field: the SQL expression and how values compare (string, date, stamp,
    number)."""

    expression: ColumnElement
    kind: str = "string"


def _columns(family: str) -> dict[str, Column]:
    """Display field IDs (and the xpath names that mean the same) of a family, upper-case."""
    if family == "project":
        table = {
            "ID": Column(Project.id), "SECONDARY_ID": Column(Project.secondary_id),
            "NAME": Column(Project.name), "DESCRIPTION": Column(Project.description),
            "KEYWORDS": Column(Project.keywords), "PI_FIRSTNAME": Column(Project.pi_firstname),
            "PI_LASTNAME": Column(Project.pi_lastname),
            "ACCESSIBILITY": Column(Project.accessibility),
            "INSERT_DATE": Column(Project.created, "stamp"),
            "INSERT_USER": Column(Project.insert_user),
        }  # fmt: skip
        return {**table, "PROJECT": table["ID"], "PI": table["PI_LASTNAME"]}
    if family == "subject":
        table = {
            "SUBJECT_ID": Column(Subject.id), "SUBJECT_LABEL": Column(Subject.label),
            "PROJECT": Column(Project.id), "INSERT_DATE": Column(Subject.created, "stamp"),
            "INSERT_USER": Column(Subject.insert_user),
        }  # fmt: skip
        return {**table, "ID": table["SUBJECT_ID"], "SUBJECTID": table["SUBJECT_ID"],
                "LABEL": table["SUBJECT_LABEL"]}  # fmt: skip
    if family == "experiment":
        table = {
            "SESSION_ID": Column(Experiment.id), "LABEL": Column(Experiment.label),
            "PROJECT": Column(Project.id), "SUBJECT_ID": Column(Subject.id),
            "SUBJECT_LABEL": Column(Subject.label), "DATE": Column(Experiment.date, "date"),
            "TIME": Column(Experiment.time), "MODALITY": Column(Experiment.modality),
            "XSI_TYPE": Column(Experiment.xsi_type),
            "INSERT_DATE": Column(Experiment.created, "stamp"),
            "INSERT_USER": Column(Experiment.insert_user),
        }  # fmt: skip
        return {**table, "ID": table["SESSION_ID"], "EXPT_ID": table["SESSION_ID"]}
    if family == "scan":
        table = {
            "ID": Column(Scan.id), "TYPE": Column(Scan.type),
            "SERIES_DESCRIPTION": Column(Scan.series_description),
            "QUALITY": Column(Scan.quality), "UID": Column(Scan.uid),
            "XSI_TYPE": Column(Scan.xsi_type), "IMAGE_SESSION_ID": Column(Experiment.id),
            "PROJECT": Column(Project.id),
        }  # fmt: skip
        return {**table, "SESSION_ID": table["IMAGE_SESSION_ID"]}
    table = {
        "ID": Column(Assessor.id), "LABEL": Column(Assessor.label),
        "XSI_TYPE": Column(Assessor.xsi_type), "PROJECT": Column(Project.id),
        "SESSION_ID": Column(Experiment.id), "SESSION_LABEL": Column(Experiment.label),
        "DATE": Column(Assessor.date, "date"), "INSERT_DATE": Column(Assessor.created, "stamp"),
        "INSERT_USER": Column(Assessor.insert_user),
    }  # fmt: skip
    return {**table, "IMAGESESSION_ID": table["SESSION_ID"]}


# What a search shows when it names no fields.
DEFAULT_FIELDS = {
    "project": ("ID", "SECONDARY_ID", "NAME", "PI"),
    "subject": ("SUBJECTID", "SUBJECT_LABEL", "PROJECT", "INSERT_DATE"),  # xnatpy reads subjectid
    "experiment": ("SESSION_ID", "LABEL", "PROJECT", "SUBJECT_ID", "SUBJECT_LABEL", "DATE"),
    "scan": ("ID", "TYPE", "SERIES_DESCRIPTION", "QUALITY", "IMAGE_SESSION_ID", "PROJECT"),
    "assessor": ("ID", "LABEL", "XSI_TYPE", "PROJECT", "SESSION_ID", "DATE"),
}
# The display field each field name shows as (its result column, lower-cased).
_CANONICAL = {
    "ID": {"subject": "SUBJECT_ID", "experiment": "SESSION_ID"},
    "LABEL": {"subject": "SUBJECT_LABEL"},
    "EXPT_ID": {"experiment": "SESSION_ID"},
    "IMAGESESSION_ID": {"assessor": "SESSION_ID"},
    "SESSION_ID": {"scan": "IMAGE_SESSION_ID"},
    "PROJECT": {"project": "ID"},
}


def family_of(datatype: str) -> str:
    """The family (table) of a datatype; 400 for one this server does not hold."""
    canonical = datatypes.canonical(datatype)
    for family, base in _FAMILY_BASES:
        if canonical is not None and datatypes.is_a(canonical, base):
            return family
    raise BadRequest(f"Search: datatype {datatype[:100]!r} is not one this server holds.")


@dataclass(frozen=True)
class Resolved:
    header: str
    column: Column


def resolve_field(root: str, ref: FieldRef) -> Resolved:
    """The column a field names in a search rooted at `root`; 400 if it names none."""
    element, name = ref.element, ref.field
    head, _, rest = name.partition("/")
    if ":" in head and rest:  # xnatpy writes field_ID as the whole xpath
        element, name = head, rest
    family = family_of(element)
    root_family = family_of(root)
    if family not in _REACHES[root_family]:
        raise BadRequest(
            f"Search: field {ref} cannot be shown or searched in a {root} search "
            f"(a {family} is not above a {root_family})."
        )
    key = name.replace("/", "_").upper()
    key = _CANONICAL.get(key, {}).get(family, key)
    column = _columns(family).get(key)
    if column is None:
        column = _stored_field(family, element, name)
        key = name.replace("/", "_").upper()
    header = key.lower() if family == root_family else (
        f"{datatypes.canonical(element).replace(':', '_').lower()}_{key.lower()}"
    )
    return Resolved(header, column)


def _stored_field(family: str, element: str, name: str) -> Column:
    """A field the XSD declares that the store keeps in the object's `fields` (JSON)."""
    leaf = name.rsplit("/", 1)[-1]
    kind = datatypes.field_type(element, leaf) or _declared_by_id(element).get(
        name.replace("/", "_").upper()
    )
    if family == "project" or kind is None:
        raise BadRequest(f"Search: {element} has no field {name[:100]!r}.")
    key = name.replace("/", "_").lower()
    entries = func.json_each(_MODEL[family].fields).table_valued("key", "value")
    value = (
        select(entries.c.value)
        .where(func.lower(entries.c.key) == key)
        .limit(1)
        .scalar_subquery()
    )
    numeric = kind in ("xs:integer", "xs:int", "xs:float", "xs:double", "xs:decimal", "xs:long")
    return Column(value, "number" if numeric else "date" if kind == "xs:date" else "string")


def _declared_by_id(element: str) -> dict[str, str]:
    """XSD type by the field ID `search/elements` lists for it (`INVESTIGATOR_FIRSTNAME` for
    `investigator/firstname`), so that a field a client found there can be searched on."""
    return {stored_key(path).upper(): kind for path, kind in declared_fields(element)}


def _base_statement(family: str) -> Select:
    """SELECT pk FROM the family's table joined with everything above it."""
    model = _MODEL[family]
    statement = select(model.pk).select_from(model)
    if family in ("scan", "assessor"):
        statement = statement.join(Experiment, model.experiment_pk == Experiment.pk)
    if family in ("scan", "assessor", "experiment"):
        statement = statement.join(Subject, Experiment.subject_pk == Subject.pk)
    if family != "project":
        statement = statement.join(Project, Subject.project_pk == Project.pk)
    return statement


def _type_filter(root: str, family: str) -> ColumnElement:
    if family in ("project", "subject"):
        return true()
    return _MODEL[family].xsi_type.in_(datatypes.subtypes(datatypes.canonical(root)))


def _condition(root: str, node: Criterion | CriteriaSet) -> ColumnElement:
    if isinstance(node, CriteriaSet):
        parts = [_condition(root, item) for item in node.items]
        if not parts:
            return true()
        return and_(*parts) if node.method == "AND" else or_(*parts)
    column = resolve_field(root, node.field).column
    expression = func.coalesce(column.expression, "")
    operator, value = node.operator, node.value
    if operator == "IS NULL":
        return expression == ""
    if operator == "IS NOT NULL":
        return expression != ""
    if operator in ("LIKE", "NOT LIKE"):
        like = expression.like(value)
        return like if operator == "LIKE" else ~like
    if column.kind == "number":
        try:
            number = float(value)
        except ValueError:
            raise BadRequest(
                f"Search: {node.field} compares numbers; {value!r} is not one."
            ) from None
        expression, value = cast(column.expression, Float), number
    elif column.kind in ("date", "stamp"):
        value = _iso_date(node.field, value)
        if column.kind == "stamp":
            expression = func.date(column.expression)
    compare: dict[str, Callable] = {
        "=": lambda a, b: a == b, "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    }  # fmt: skip
    # An empty field is XNAT's NULL: no comparison matches it (IS NULL does).
    return and_(func.coalesce(column.expression, "") != "", compare[operator](expression, value))


def _iso_date(field: FieldRef, value: str) -> str:
    for pattern in _DATE_FORMATS:
        try:
            return datetime.strptime(value.strip(), pattern).strftime("%Y-%m-%d")
        except ValueError:
            continue
    raise BadRequest(f"Search: {field} compares dates; {value!r} is not YYYY-MM-DD or MM/DD/YYYY.")


def run_search(
    db: Session, search: SearchDocument, readable: list[int] | None
) -> tuple[list[str], list[dict[str, str]]]:
    """(headers, rows) of a search over the projects in `readable` (None: all), in the
    order objects were created."""
    family = family_of(search.root)
    fields = search.fields or tuple(FieldRef(search.root, f) for f in DEFAULT_FIELDS[family])
    shown: dict[str, Column] = {}
    for ref in fields:
        resolved = resolve_field(search.root, ref)
        shown.setdefault(resolved.header, resolved.column)
    model = _MODEL[family]
    statement = (
        _base_statement(family)
        .add_columns(*(column.expression for column in shown.values()))
        .where(_type_filter(search.root, family), _condition(search.root, search.where))
        .order_by(model.pk)
    )
    if readable is not None:
        statement = statement.where(_visible(family, readable) if readable else false())
    headers = list(shown)
    kinds = [column.kind for column in shown.values()]
    rows = [
        {h: _text(v, kind) for h, v, kind in zip(headers, values[1:], kinds, strict=True)}
        for values in db.execute(statement)
    ]
    return headers, rows


def _visible(family: str, readable: list[int]) -> ColumnElement:
    """Rows of the readable projects, subjects and sessions shared into them included."""
    if family == "subject":
        return shares.in_projects(Subject, readable)
    if family in ("experiment", "scan"):
        return shares.in_projects(Experiment, readable)
    return Project.pk.in_(readable)


def _text(value: object, kind: str) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, float) and value.is_integer() and kind != "number":
        return str(int(value))
    return str(value)

