"""XNAT object documents read from clients: `PUT ...?inbody=true` (the Container Service's
Assessor and Scan output handlers), a session document as pyxnat's `create(xml=...)` sends it
(a multipart file) or as a plain `text/xml` body.

The root element names the datatype, by type (`<icr:roiCollectionData>`) or by element
(`<xnat:MRSession>`); attributes and leaves hold the fields, nested elements are flattened as
the server stores them (`<xnat:investigator><xnat:firstname>` → `investigator_firstname`),
`<xnat:fields><xnat:field name="N">` are custom fields and `<xnat:scans>` the session's scans;
resources, files and other sub-objects are not read (they have their own calls).
Parsed with defusedxml: entity expansion, external entities and DTDs are refused, and nesting
deeper than any XNAT document is a 400, so a hostile document costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from werkzeug.exceptions import BadRequest

from xnat_ml.server.formats.listing import CUSTOM_FIELD
from xnat_ml.server.formats.validation import query_fields
from xnat_ml.server.formats.xml_writer import datatype_of

MAX_XML_BYTES = 1 << 20
MAX_DEPTH = 8  # XNAT's own session documents nest five deep (session/scans/scan/file/...)
# Namespace → prefix of the schemas this server serves (schemas/*.xsd).
NAMESPACES = {"http://nrg.wustl.edu/xnat": "xnat", "http://www.icr.ac.uk/icr": "icr"}
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_LISTS = ("scans",)  # sub-objects read from a document (others are left to their own calls)
# Sub-objects and references a document may hold that are not fields of the object: skipped
# (resources, a scan's files, other objects), as is any element carrying an xsi:type.
_NOT_FIELDS = frozenset(
    {"resources", "file", "in", "out", "experiments", "assessors", "reconstructions", "sharing"}
)


@dataclass
class XmlObject:
    """An object read from a document: datatype, flat fields, sub-objects by list element."""

    xsi_type: str
    fields: dict[str, str]
    children: dict[str, list[XmlObject]] = field(default_factory=dict)


def read_object_xml(body: bytes) -> XmlObject:
    """The object an XNAT document describes; 400 naming the problem otherwise."""
    if len(body) > MAX_XML_BYTES:
        raise BadRequest(f"XML document: larger than {MAX_XML_BYTES} bytes.")
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise BadRequest(f"XML document: not accepted ({exc}).") from exc
    namespace, name = _split(root.tag)
    if namespace not in NAMESPACES:
        raise BadRequest(
            f"XML document: root element {root.tag!r} is not in an XNAT schema namespace."
        )
    return _object(root, datatype_of(f"{NAMESPACES[namespace]}:{name}"), 1)


def _object(element, xsi_type: str, depth: int) -> XmlObject:
    found = XmlObject(xsi_type, {})
    _read(element, "", found, depth)
    found.fields = query_fields(found.fields)
    return found


def _read(element, prefix: str, into: XmlObject, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BadRequest(f"XML document: elements nested deeper than {MAX_DEPTH} levels.")
    for key, value in element.attrib.items():
        if not key.startswith("{"):
            into.fields[prefix + key] = value
    for child in element:
        if not isinstance(child.tag, str):
            continue  # a comment or processing instruction
        name = _split(child.tag)[1]
        if name in _NOT_FIELDS or child.get(_XSI_TYPE):
            continue
        if not prefix and name == "fields":
            for custom in child:
                if custom.get("name"):
                    into.fields[CUSTOM_FIELD + custom.get("name")] = (custom.text or "").strip()
        elif not prefix and name in _LISTS:
            into.children[name] = [
                _object(item, datatype_of(item.get(_XSI_TYPE) or ""), depth + 2)
                for item in child
                if isinstance(item.tag, str)
            ]
        elif len(child) == 0:
            if text := (child.text or "").strip():
                into.fields[prefix + name] = text
        else:
            _read(child, f"{prefix}{name}_", into, depth + 1)


def _split(tag: str) -> tuple[str, str]:
    """'{namespace}name' → (namespace, name)."""
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag
