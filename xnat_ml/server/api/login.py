"""Login routes as XNAT has them: /data/services/auth, /data/JSESSION, /data/auth, alias tokens."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import Forbidden, NotFound

from xnat_ml.server import auth
from xnat_ml.server.formats.json_body import limit_body
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.models import AliasToken, User

bp = Blueprint("login", __name__)

MAX_LOGIN_BYTES = 64 * 1024  # a username and a password


@bp.route("/data/services/auth", methods=["PUT", "POST"])
def services_auth() -> Response:
    """Form fields username/password → the new JSESSIONID as the body (and as a cookie)."""
    limit_body(MAX_LOGIN_BYTES)  # anyone may post here: no gigabytes of form to spool
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    user = auth.authenticate(username, password)
    if user is None:
        return Response(
            "<html><body><h3>Login attempt failed. Please try again.</h3></body></html>",
            401,
            mimetype="text/html",
        )
    session_id = auth.start_session(user)
    return auth.with_session_cookie(Response(session_id, mimetype="text/plain"), session_id)


@bp.route("/data/JSESSION", methods=["GET"])
def get_jsession() -> Response:
    """The caller's session id; basic-auth callers get a new session (and cookie)."""
    user = auth.require_login()
    current = request.cookies.get(auth.SESSION_COOKIE)
    if request.authorization is None and current:
        return Response(current, mimetype="text/plain")
    session_id = auth.start_session(user)
    return auth.with_session_cookie(Response(session_id, mimetype="text/plain"), session_id)


@bp.route("/data/JSESSION", methods=["DELETE"])
def delete_jsession() -> Response:
    if session_id := request.cookies.get(auth.SESSION_COOKIE):
        auth.end_session(session_id)
    response = Response("", 200)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


@bp.route("/data/auth", methods=["GET"])
def whoami() -> Response:
    user = auth.require_login()
    return Response(f"User '{user.username}' is logged in", mimetype="text/plain")


# ----------------------------------------------------------------------------- alias tokens


def _token_json(token: AliasToken, secret: str | None = None) -> dict:
    body = {
        "alias": token.alias,
        "xdatUserId": token.user.username,
        "created": int(token.created.timestamp() * 1000),
        "estimatedExpirationTime": int(token.expires.timestamp() * 1000),
        "enabled": True,
        "singleUse": False,
        "validIPAddresses": [],
    }
    if secret is not None:
        body["secret"] = secret
    return body


@bp.route("/data/services/tokens/issue", methods=["GET", "PUT", "POST"])
@bp.route("/data/services/tokens/issue/user/<username>", methods=["GET", "PUT", "POST"])
def issue_token(username: str | None = None) -> Response:
    """A new alias token (for another user only when the caller is a site admin). Asked for with
    a token (or a session a token opened), it is that token's child: it expires no later and is
    revoked with it, so a job's token cannot mint one that outlives the job."""
    caller = auth.require_login()
    user = caller
    if username is not None and username != caller.username:
        if not auth.is_admin(caller):
            raise Forbidden("Only site administrators may issue alias tokens for other users.")
        found = get_db().scalar(select(User).where(User.username == username))
        if found is None:
            raise NotFound(f"User '{username}' does not exist.")
        user = found
    token, secret = auth.issue_token(user, parent=auth.current_token())
    return jsonify(_token_json(token, secret))


@bp.route("/data/services/tokens/validate/<alias>/<secret>", methods=["GET"])
def validate_token(alias: str, secret: str) -> Response:
    """{"valid": username} for a live token, {"valid": null} otherwise, as XNAT answers."""
    auth.require_login()
    token = auth.validate_token(alias, secret)
    return jsonify({"valid": token.user.username if token is not None else None})


@bp.route("/data/services/tokens/invalidate/<alias>", methods=["GET", "DELETE", "PUT"])
def invalidate_token(alias: str) -> Response:
    caller = auth.require_login()
    db = get_db()
    token = db.get(AliasToken, alias)
    if token is None:
        raise NotFound(f"Alias token '{alias}' does not exist.")
    if token.user_pk != caller.pk and not auth.is_admin(caller):
        raise Forbidden("Non-admin users can only invalidate their own alias tokens.")
    auth.revoke_token(alias)
    db.commit()
    return jsonify({"result": "OK"})
