"""XNAT's search service: `POST /data/search` with a search document, and saved searches.

pyxnat's `select(type, columns).where(...)`, `inspect.field_values` and `manage.search`, and
xnatpy's `Class.query()...all()` use these routes. Results are a ResultSet (JSON, or CSV with
`format=csv`) whose columns are the fields asked for, named as XNAT names them (`subject_id`,
`label`, `xnat_projectdata_id` for a field of another datatype); rows come only from the
projects the caller may read, for saved searches too.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, Response, request
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, Forbidden, NotFound

from xnat_ml.server import auth
from xnat_ml.server.formats.listing import result_set
from xnat_ml.server.formats.search_xml import MAX_SEARCH_BYTES, SearchDocument, parse_search
from xnat_ml.server.formats.validation import check_label
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.saved_searches import SavedSearch
from xnat_ml.server.store.search_query import run_search

bp = Blueprint("search", __name__)


def _body() -> bytes:
    return request.stream.read(MAX_SEARCH_BYTES + 1)


def _results(search: SearchDocument, args: Mapping[str, str]) -> Response:
    user = auth.require_login()
    headers, rows = run_search(get_db(), search, auth.readable_project_pks(user))
    steering = {k: v for k, v in args.items() if k.lower() in ("format", "limit", "offset")}
    return result_set(rows, steering, headers)


@bp.route("/data/search", methods=["POST"])
def search() -> Response:
    return _results(parse_search(_body()), request.args)


# ----------------------------------------------------------------------------- saved searches


def _saved(search_id: str, user) -> SavedSearch:
    saved = get_db().get(SavedSearch, search_id)
    if saved is None or not saved.visible_to(user):  # another's private search: as if absent
        raise NotFound(f"Saved search {search_id!r} does not exist.")
    return saved


@bp.route("/data/search/saved", methods=["GET"])
def list_saved() -> Response:
    user = auth.require_login()
    searches = get_db().scalars(select(SavedSearch).order_by(SavedSearch.created))
    rows = [
        {
            "id": saved.id,
            "brief_description": saved.brief_description,
            "description": saved.description,
            "root_element_name": saved.root_element,
            "owner": saved.owner.username,
            "URI": f"/data/search/saved/{saved.id}",
        }
        for saved in searches
        if saved.visible_to(user)
    ]
    return result_set(rows, request.args)


@bp.route("/data/search/saved/<search_id>", methods=["GET"])
def get_saved(search_id: str) -> Response:
    saved = _saved(search_id, auth.require_login())
    return Response(saved.document, mimetype="text/xml")


@bp.route("/data/search/saved/<search_id>/results", methods=["GET"])
def run_saved(search_id: str) -> Response:
    saved = _saved(search_id, auth.require_login())
    return _results(parse_search(saved.document.encode("utf-8")), request.args)


@bp.route("/data/search/saved/<search_id>", methods=["PUT"])
def put_saved(search_id: str) -> Response:
    """Store a search document under `search_id` (pyxnat PUTs it with `inbody=true`)."""
    user = auth.require_login()
    auth.refuse_job("save searches")
    check_label("Saved search", search_id)
    body = _body()
    search = parse_search(body)
    run_search(get_db(), search, [])  # every field and criterion must resolve: 400 otherwise
    db = get_db()
    saved = db.get(SavedSearch, search_id)
    if saved is not None and not (user.is_admin or saved.owner_pk == user.pk):
        raise Forbidden(f"Saved search {search_id!r} belongs to another user.")
    try:
        document = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Search XML: not UTF-8.") from None
    status = 200 if saved is not None else 201
    if saved is None:
        saved = SavedSearch(id=search_id, owner_pk=user.pk)
        db.add(saved)
    saved.brief_description = search.brief_description or search_id
    saved.description = search.description
    saved.root_element = search.root
    saved.allowed_users = list(search.allowed_users)
    saved.document = document
    db.commit()
    return Response(search_id, status, mimetype="text/plain")


@bp.route("/data/search/saved/<search_id>", methods=["DELETE"])
def delete_saved(search_id: str) -> Response:
    user = auth.require_login()
    saved = _saved(search_id, user)
    if not (user.is_admin or saved.owner_pk == user.pk):
        raise Forbidden(f"Saved search {search_id!r} belongs to another user.")
    db = get_db()
    db.delete(saved)
    db.commit()
    return Response("", 200)
