"""XNAT object documents (`GET ...?format=xml`) written from the served XSD's content model.

The element order, namespaces and nesting come from schemas/*.xsd, so every document this server
writes is valid against the schemas it serves, and a field the XSD gains appears without code
here. Values arrive flat, as the server stores them: `investigator_firstname` fills
`<xnat:investigator><xnat:firstname>`, `field:NAME` is a custom field
(`<xnat:fields><xnat:field name="NAME">`), and lists of sub-objects (scans, resources,
experiments, ...) arrive as `Doc`s keyed by the XSD element that wraps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml.ElementTree import fromstring

from xnat_ml.server.formats.datatypes import SCHEMA_FILES, SCHEMAS, XS
from xnat_ml.server.formats.listing import CUSTOM_FIELD

NAMESPACE_URIS = {
    "xnat": "http://nrg.wustl.edu/xnat",
    "icr": "http://www.icr.ac.uk/icr",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}


@dataclass
class Doc:
    """One object to write: its datatype, flat field values and sub-objects by XSD element."""

    xsi_type: str
    values: dict[str, str]
    children: dict[str, list[Doc]] = field(default_factory=dict)


@dataclass
class _Slot:
    name: str
    kind: str  # simple | nested (fields under a prefix) | custom | items (sub-objects)
    type: str = ""  # the declared type: xs:... for simple slots, a datatype for nested/items
    item: str = ""  # the element each item is written as (wrapper slots: the inner one)


@dataclass
class _Type:
    prefix: str
    base: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)  # name → xs type
    slots: list[_Slot] = field(default_factory=list)


def _qualified(name: str | None, prefix: str) -> str:
    return name if not name or ":" in name else f"{prefix}:{name}"


def _slot(decl, prefix: str) -> _Slot:
    """What an xs:element declaration holds, as far as writing values goes."""
    name, kind = decl.get("name"), decl.get("type") or ""
    many = decl.get("maxOccurs") == "unbounded"
    if kind.startswith("xs:") or decl.find(f"{XS}simpleType") is not None:
        restriction = decl.find(f"{XS}simpleType/{XS}restriction")
        return _Slot(name, "simple", kind or restriction.get("base", "xs:string"))
    if name == "fields":  # XNAT's custom fields: <field name="NAME">value</field>
        return _Slot(name, "custom")
    if kind:
        kind = _qualified(kind, prefix)
        return _Slot(name, "items" if many else "nested", kind, name)
    inner = decl.findall(f"{XS}complexType/{XS}sequence/{XS}element")
    if len(inner) == 1 and inner[0].get("type") and not inner[0].get("type").startswith("xs:"):
        return _Slot(name, "items", _qualified(inner[0].get("type"), prefix), inner[0].get("name"))
    return _Slot(name, "nested", f"{prefix}:{name}#anonymous")


def _read_type(node, prefix: str, types: dict[str, _Type], name: str) -> None:
    """Record a complexType (named, or an element's anonymous one under `name`)."""
    info = types[name] = _Type(prefix)
    body = node
    extension = node.find(f"{XS}complexContent/{XS}extension")
    if extension is not None:
        info.base = _qualified(extension.get("base"), prefix)
        body = extension
    info.attributes = {a.get("name"): a.get("type") for a in body.findall(f"{XS}attribute")}
    for decl in body.findall(f"{XS}sequence/{XS}element"):
        slot = _slot(decl, prefix)
        info.slots.append(slot)
        if slot.type.endswith("#anonymous"):
            _read_type(decl.find(f"{XS}complexType"), prefix, types, slot.type)


@cache
def _model() -> tuple[dict[str, _Type], dict[str, str]]:
    """(datatype → its content model, datatype → its top-level element name)."""
    types: dict[str, _Type] = {}
    elements: dict[str, str] = {}
    for prefix, filename in SCHEMA_FILES.items():
        root = fromstring((SCHEMAS / filename).read_bytes())
        for node in root.findall(f"{XS}complexType"):
            _read_type(node, prefix, types, f"{prefix}:{node.get('name')}")
        for node in root.findall(f"{XS}element"):
            name = f"{prefix}:{node.get('name')}"
            elements.setdefault(_qualified(node.get("type"), prefix), name)
    return types, elements


def _chain(xsi_type: str) -> list[_Type]:
    """The type's model and its bases', root first (XSD extension appends to the base)."""
    types = _model()[0]
    chain = []
    current: str | None = xsi_type
    while current is not None and current in types:
        chain.append(types[current])
        current = types[current].base
    return chain[::-1]


def _fill(element: Element, xsi_type: str, doc: Doc, prefix: str = "") -> bool:
    """Write the values (under `prefix`) and sub-objects of `doc` into `element` in XSD order;
    whether anything was written."""
    values = _lowered(doc.values)
    chain = _chain(xsi_type)
    wrote = False
    for info in chain:
        for name in info.attributes:
            if value := values.get(f"{prefix}{name}".lower()):
                element.set(name, value)
                wrote = True
    for info in chain:
        for slot in info.slots:
            tag = f"{info.prefix}:{slot.name}"
            if slot.kind == "simple":
                if value := values.get(f"{prefix}{slot.name}".lower()):
                    SubElement(element, tag).text = value
                    wrote = True
            elif slot.kind == "nested":
                child = Element(tag)
                if _fill(child, slot.type, doc, f"{prefix}{slot.name}_"):
                    element.append(child)
                    wrote = True
            elif slot.kind == "custom" and not prefix:
                custom = [(k[len(CUSTOM_FIELD) :], v) for k, v in values.items()
                          if k.startswith(CUSTOM_FIELD) and v]  # fmt: skip
                if custom:
                    holder = SubElement(element, tag)
                    for name, value in sorted(custom):
                        SubElement(holder, f"{info.prefix}:field", name=name).text = value
                    wrote = True
            elif slot.kind == "items" and not prefix and doc.children.get(slot.name):
                holder = element if slot.item == slot.name else SubElement(element, tag)
                for item in doc.children[slot.name]:
                    child = SubElement(holder, f"{info.prefix}:{slot.item}")
                    child.set("xsi:type", item.xsi_type)
                    _fill(child, item.xsi_type, item)
                wrote = True
    return wrote


def render(doc: Doc) -> bytes:
    """The object's XML document, namespaces declared on the root as XNAT writes them."""
    name = _model()[1].get(doc.xsi_type, doc.xsi_type)
    root = Element(name)
    for prefix, uri in NAMESPACE_URIS.items():
        root.set(f"xmlns:{prefix}", uri)
    _fill(root, doc.xsi_type, doc)
    return tostring(root, encoding="UTF-8", xml_declaration=True)


def _lowered(values: dict[str, str]) -> dict[str, str]:
    return {
        (key if key.startswith(CUSTOM_FIELD) else key.lower()): str(value)
        for key, value in values.items()
        if value not in (None, "")
    }


def datatype_of(name: str) -> str:
    """The datatype a document's root (or xsi:type) names: `xnat:MRSession` → `xnat:mrSessionData`;
    a datatype name is returned as given."""
    by_element = {element.lower(): kind for kind, element in _model()[1].items()}
    return by_element.get(name.strip().lower(), name)


def declared_fields(xsi_type: str, prefix: str = "") -> list[tuple[str, str]]:
    """(field path, xs type) of every value a datatype's documents can hold, inherited ones
    first: `investigator/firstname` for nested ones; custom fields and sub-objects left out."""
    found = []
    for info in _chain(xsi_type):
        found += [(f"{prefix}{name}", kind) for name, kind in info.attributes.items()]
        for slot in info.slots:
            if slot.kind == "simple":
                found.append((f"{prefix}{slot.name}", slot.type))
            elif slot.kind == "nested":
                found += declared_fields(slot.type, f"{prefix}{slot.name}/")
    return found
