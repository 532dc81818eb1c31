"""Site-level routes clients probe on connect: root page, version, build info, schemas, elements."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import NotFound

from xnat_ml import __version__
from xnat_ml.server import auth
from xnat_ml.server.formats.datatypes import BASE_TYPE, SCHEMAS
from xnat_ml.server.formats.listing import result_set, stored_key
from xnat_ml.server.formats.xml_writer import declared_fields

bp = Blueprint("meta", __name__)


# Search fields per datatype family, as /data/search/elements/{type} lists them.
_SEARCH_FIELDS = {
    "xnat:projectData": ("ID", "SECONDARY_ID", "NAME", "DESCRIPTION", "PI"),
    "xnat:subjectData": ("SUBJECT_ID", "SUBJECT_LABEL", "PROJECT", "INSERT_DATE"),
    "xnat:subjectAssessorData": (
        "SESSION_ID",
        "LABEL",
        "PROJECT",
        "SUBJECT_ID",
        "SUBJECT_LABEL",
        "DATE",
        "MODALITY",
    ),
    "xnat:imageScanData": ("ID", "TYPE", "SERIES_DESCRIPTION", "QUALITY"),
    "xnat:imageAssessorData": ("ID", "LABEL", "PROJECT", "SESSION_ID"),
}


# XSD types → the TYPE column's words.
_SEARCH_TYPES = {"xs:date": "date", "xs:time": "time", "xs:dateTime": "timestamp",
                 "xs:integer": "integer", "xs:int": "integer", "xs:long": "integer",
                 "xs:decimal": "float", "xs:float": "float", "xs:double": "float",
                 "xs:boolean": "boolean"}  # fmt: skip


@bp.route("/", methods=["GET"])
def root() -> Response:
    """A landing page (xnatpy GETs it first to detect redirects).

    With basic auth it also opens a session: xnatpy logs in with alias tokens this way and
    reads the JSESSIONID cookie.
    """
    user = auth.require_login() if request.authorization is not None else None
    response = Response(
        "<!doctype html><html><head><title>xnat-ml</title></head><body>"
        f"<h1>xnat-ml embedded XNAT</h1><p>xnat-ml {__version__}, XNAT API "
        f"{current_app.config['XNAT_VERSION']}. Connect with <code>xnat.connect(url)</code>."
        "</p></body></html>",
        mimetype="text/html",
    )
    if user is not None:
        auth.with_session_cookie(response, auth.start_session(user))
    return response


@bp.route("/data/version", methods=["GET"])
def version() -> Response:
    """Gone since XNAT 1.7: clients (pyxnat's `version()`, xnatpy) fall back to buildInfo."""
    raise NotFound("/data/version is not served (XNAT >= 1.7); use /xapi/siteConfig/buildInfo.")


@bp.route("/xapi/siteConfig/buildInfo", methods=["GET"])
def build_info() -> Response:
    return jsonify(
        {
            "version": current_app.config["XNAT_VERSION"],
            "buildNumber": f"xnat-ml-{__version__}",
            "commit": "xnat-ml",
            "siteId": current_app.config["SITE_ID"],
        }
    )


@bp.route("/xapi/siteConfig/siteId", methods=["GET"])
def site_id() -> Response:
    return Response(current_app.config["SITE_ID"], mimetype="text/plain")


@bp.route("/xapi/schemas", methods=["GET"])
def schema_list() -> Response:
    auth.require_login()
    names = sorted(
        p.name.removesuffix(".xsd") for p in SCHEMAS.iterdir() if p.name.endswith(".xsd")
    )
    return jsonify(names)


@bp.route("/xapi/schemas/<name>", methods=["GET"])
def schema(name: str) -> Response:
    auth.require_login()
    candidates = {p.name: p for p in SCHEMAS.iterdir() if p.name.endswith(".xsd")}
    found = candidates.get(f"{name}.xsd")
    if found is None:
        raise NotFound(
            f"Schema '{name}' does not exist; available: {', '.join(sorted(candidates))}."
        )
    return Response(found.read_text(encoding="utf-8"), mimetype="application/xml")


def _search_fields(datatype: str) -> tuple[str, ...]:
    current: str | None = datatype
    while current is not None:
        if current in _SEARCH_FIELDS:
            return _SEARCH_FIELDS[current]
        current = BASE_TYPE[current]
    return ()


@bp.route("/data/search/elements", methods=["GET"])
def search_elements() -> Response:
    auth.require_login()
    rows = [
        {
            "ELEMENT_NAME": name,
            "SINGULAR": name.split(":")[1].removesuffix("Data"),
            "PLURAL": name.split(":")[1].removesuffix("Data") + "s",
            "SECURED": "true",
            "COUNT": "0",
        }
        for name in BASE_TYPE
        if _search_fields(name)
    ]
    return result_set(rows, request.args)


@bp.route("/data/search/elements/<datatype>", methods=["GET"])
def search_element_fields(datatype: str) -> Response:
    auth.require_login()
    if datatype not in BASE_TYPE:
        raise NotFound(f"Datatype '{datatype}' is not implemented by this server.")
    # then every field the served XSD declares, named as XNAT names display fields (upper case:
    # xnatpy makes each a class attribute) by the key it is stored under (INVESTIGATOR_FIRSTNAME,
    # which listings take as a column: xnat:subjectData/INVESTIGATOR_FIRSTNAME)
    declared = {stored_key(path).upper(): kind for path, kind in declared_fields(datatype)}
    fields = [(name, declared.pop(name, "xs:string")) for name in _search_fields(datatype)]
    fields += declared.items()
    rows = [
        {
            "FIELD_ID": field,
            "HEADER": field.replace("_", " ").title(),
            "SUMMARY": field.replace("_", " ").lower(),
            "TYPE": _SEARCH_TYPES.get(kind, "string"),
            "REQUIRES_VALUE": "false",
            "DESC": "",
            "ELEMENT_NAME": datatype,
            "SRC": "0",
        }
        for field, kind in fields
    ]
    return result_set(rows, request.args)
