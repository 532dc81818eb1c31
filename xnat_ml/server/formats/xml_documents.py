"""XNAT object documents in XML, as `PUT .../assessors/{label}?inbody=true` carries them.

The Container Service creates assessors and scans this way (output handlers of type Assessor
and Scan): the root element names the datatype (`<icr:roiCollectionData ...>`), its attributes
and leaf children hold the fields. Parsed with defusedxml: entity expansion, external entities
and DTDs are refused, so a hostile document costs nothing.
"""

from __future__ import annotations

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from werkzeug.exceptions import BadRequest

from xnat_ml.server.formats.validation import query_fields

MAX_XML_BYTES = 1 << 20
# Namespace → prefix of the schemas this server serves (schemas/*.xsd).
NAMESPACES = {"http://nrg.wustl.edu/xnat": "xnat", "http://www.icr.ac.uk/icr": "icr"}


def read_object_xml(body: bytes) -> tuple[str, dict[str, str]]:
    """(xsiType, fields) of an XNAT object document; 400 naming the problem otherwise."""
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
    fields = {key: value for key, value in root.attrib.items() if not key.startswith("{")}
    for child in root:
        if len(child) == 0 and isinstance(child.tag, str) and (child.text or "").strip():
            fields[_split(child.tag)[1]] = child.text.strip()
    return f"{NAMESPACES[namespace]}:{name}", query_fields(fields)


def _split(tag: str) -> tuple[str, str]:
    """'{namespace}name' → (namespace, name)."""
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag
