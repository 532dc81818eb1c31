"""Users and project membership: /xapi/users (site admins create and disable; a user changes their
own password), /data/projects/{p}/users/...

A password change or disabling ends the user's web sessions and alias tokens (a password change
keeps the password-opened session that made it), so whoever held them must log in again.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, Conflict, Forbidden, NotFound

from xnat_ml.server import auth
from xnat_ml.server.formats.listing import result_set
from xnat_ml.server.formats.names import unsafe_character
from xnat_ml.server.routing import archive_route
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.models import ROLES, ProjectRole, User
from xnat_ml.server.store.objects import resolve_object

bp = Blueprint("users", __name__)

_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
# XNAT names the membership groups in the plural: /users/Owners/alice
_GROUPS = {f"{role.lower()}s": role for role in ROLES} | {role.lower(): role for role in ROLES}


def _user_json(user: User) -> dict:
    return {
        "username": user.username,
        "email": user.email,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "enabled": user.enabled,
        "verified": user.verified,
        "id": user.pk,
        "admin": user.is_admin,
    }


def _find_user(username: str) -> User:
    user = get_db().scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"User '{username}' does not exist.")
    return user


@bp.route("/xapi/users", methods=["POST"])
def create_user() -> Response:
    """JSON body {username, password, email, firstName, lastName, enabled, verified}."""
    auth.require_admin()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("Send the new user as a JSON object with username and password.")
    username = str(body.get("username", ""))
    password = str(body.get("password", ""))
    if not _USERNAME_RE.fullmatch(username):
        raise BadRequest(f"Username {username!r} must be 1-64 letters, digits or _ . @ -.")
    if not password:
        raise BadRequest(f"User '{username}' needs a password.")
    for key in ("email", "firstName", "lastName"):
        if problem := unsafe_character(str(body.get(key, ""))):
            raise BadRequest(f"User '{username}': {key} contains a {problem}.")
    db = get_db()
    if db.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"User '{username}' already exists.")
    user = User(
        username=username,
        password_hash=auth.hash_password(password),
        email=str(body.get("email", "")),
        first_name=str(body.get("firstName", "")),
        last_name=str(body.get("lastName", "")),
        enabled=bool(body.get("enabled", True)),
        verified=bool(body.get("verified", True)),
    )
    db.add(user)
    db.commit()
    return Response(jsonify(_user_json(user)).get_data(), 201, mimetype="application/json")


@bp.route("/xapi/users", methods=["GET"])
def list_usernames() -> Response:
    auth.require_login()
    return jsonify(list(get_db().scalars(select(User.username).order_by(User.username))))


@bp.route("/xapi/users/profiles", methods=["GET"])
def list_profiles() -> Response:
    auth.require_login()
    return jsonify([_user_json(u) for u in get_db().scalars(select(User).order_by(User.pk))])


@bp.route("/xapi/users/<username>", methods=["GET"])
def get_user(username: str) -> Response:
    auth.require_login()
    return jsonify(_user_json(_find_user(username)))


@bp.route("/xapi/users/<username>/roles", methods=["GET"])
def get_site_roles(username: str) -> Response:
    """The user's site roles, as XNAT lists them (`Administrator`); to the user and admins."""
    caller = auth.require_login()
    if caller.username != username and not caller.is_admin:
        raise Forbidden(f"User '{caller.username}' may not read the roles of '{username}'.")
    return jsonify(["Administrator"] if _find_user(username).is_admin else [])


# What PUT /xapi/users/{username} accepts: the profile fields GET returns (so a fetched profile
# can be sent back), the new password and, for one's own change, the current one.
_PROFILE_FIELDS = {"email": "email", "firstName": "first_name", "lastName": "last_name"}
_ADMIN_ONLY = {"firstName", "lastName", "enabled", "verified"}
_ACCEPTED = {*_PROFILE_FIELDS, "enabled", "verified", "password", "currentPassword",
             "username", "id", "admin"}  # fmt: skip


@bp.route("/xapi/users/<username>", methods=["PUT"])
def update_user(username: str) -> Response:
    """XNAT's user update: a site admin changes anything; a user changes their own email and
    password, the latter only with `currentPassword` (as XNAT's self-service update asks).
    Answers the updated profile, or 304 when nothing changed."""
    caller = auth.require_login()
    auth.refuse_job("change users or passwords")
    user = _find_user(username)
    if not auth.is_admin(caller) and caller.pk != user.pk:
        raise Forbidden(f"User '{caller.username}' may not change user '{username}'.")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest(f"User '{username}': send the changes as a JSON object.")
    unknown = sorted(set(body) - _ACCEPTED)
    if unknown:
        raise BadRequest(f"User '{username}': unknown field {unknown[0]!r}.")
    if body.get("username") not in (None, "", username):
        raise BadRequest(f"User '{username}': the body names another user.")
    changes = {k: v for k, v in body.items() if k in {*_PROFILE_FIELDS, "enabled", "verified"}}
    for key, value in changes.items():
        wanted = bool if key in ("enabled", "verified") else str
        if not isinstance(value, wanted):
            raise BadRequest(f"User '{username}': {key!r} must be a {wanted.__name__}.")
    changes = {k: v for k, v in changes.items() if v != _user_json(user)[k]}
    refused = sorted(_ADMIN_ONLY & set(changes))
    if refused and not auth.is_admin(caller):
        raise Forbidden(
            f"User '{caller.username}' may not change {refused[0]!r} (site admins only)."
        )
    password = body.get("password")
    if password is not None and (not isinstance(password, str) or not password):
        raise BadRequest(f"User '{username}': 'password' must be a non-empty string.")
    if password and not auth.is_admin(caller):
        current = body.get("currentPassword")
        if not isinstance(current, str) or not auth.password_matches(user, current):
            raise BadRequest(f"User '{username}': current password needed to update password.")
    if not changes and not password:
        return Response(status=304)
    if changes.get("enabled") is False:
        _refuse_self_disable(caller, user)
    for key, column in _PROFILE_FIELDS.items():
        if key in changes:
            setattr(user, column, changes[key])
    if "verified" in changes:
        user.verified = changes["verified"]
    if password:
        user.password_hash = auth.hash_password(password)
        auth.end_user_access(user, keep_session=_own_password_session(caller, user))
    if "enabled" in changes:
        _set_enabled(user, changes["enabled"])
    get_db().commit()
    return jsonify(_user_json(user))


@bp.route("/xapi/users/<username>/enabled", methods=["GET"])
def get_enabled(username: str) -> Response:
    auth.require_login()
    return jsonify(_find_user(username).enabled)


@bp.route("/xapi/users/<username>/enabled/<flag>", methods=["PUT"])
def put_enabled(username: str, flag: str) -> Response:
    """Enable or disable a user (site admins); disabling ends their sessions and tokens."""
    caller = auth.require_admin()
    user = _find_user(username)
    if flag.lower() not in ("true", "false"):
        raise BadRequest(f"User '{username}': enabled flag {flag[:20]!r} is not true or false.")
    enabled = flag.lower() == "true"
    if not enabled:
        _refuse_self_disable(caller, user)
    _set_enabled(user, enabled)
    get_db().commit()
    return Response(status=200)


def _refuse_self_disable(caller: User, user: User) -> None:
    if caller.pk == user.pk:
        raise Conflict(f"User '{user.username}' may not disable their own account.")


def _set_enabled(user: User, enabled: bool) -> None:
    """A disabled user cannot log in, and nothing they held before works after re-enabling."""
    user.enabled = enabled
    if not enabled:
        auth.end_user_access(user)


def _own_password_session(caller: User, user: User) -> str | None:
    """The session to keep when a user changes their own password: the one that made the
    change, if a password opened it (never one opened with a token, nor for an admin's reset
    of someone else's password)."""
    if caller.pk != user.pk or request.authorization is not None or auth.current_token():
        return None
    return request.cookies.get(auth.SESSION_COOKIE)


@bp.route("/data/users", methods=["GET"])
def list_users() -> Response:
    auth.require_login()
    rows = [
        {
            "xdat_user_id": u.pk,
            "login": u.username,
            "firstname": u.first_name,
            "lastname": u.last_name,
            "email": u.email,
            "enabled": u.enabled,
        }
        for u in get_db().scalars(select(User).order_by(User.pk))
    ]
    return result_set(rows, request.args)


@archive_route(bp, "/projects/<project_id>/users", methods=["GET"])
def project_users(project_id: str) -> Response:
    project = resolve_object(f"projects/{project_id}", "read")
    rows = [
        {
            "login": role.user.username,
            "firstname": role.user.first_name,
            "lastname": role.user.last_name,
            "email": role.user.email,
            "xdat_user_id": role.user.pk,
            "displayname": f"{role.role}s",
            "role": role.role,
            "GROUP_ID": f"{project.id}_{role.role.lower()}",
        }
        for role in sorted(project.roles, key=lambda r: r.pk)
    ]
    return result_set(rows, request.args)


def _group(name: str) -> str:
    role = _GROUPS.get(name.lower())
    if role is None:
        raise BadRequest(f"Group {name!r} is not one of Owners, Members, Collaborators.")
    return role


@archive_route(bp, "/projects/<project_id>/users/<group>/<username>", methods=["PUT"])
def add_member(project_id: str, group: str, username: str) -> Response:
    """Give the user this role in the project (replacing any other role there)."""
    project = resolve_object(f"projects/{project_id}", "own")
    auth.refuse_job("change project memberships")
    role = _group(group)
    user = _find_user(username)
    db = get_db()
    membership = db.scalar(
        select(ProjectRole).where(
            ProjectRole.project_pk == project.pk, ProjectRole.user_pk == user.pk
        )
    )
    if membership is None:
        db.add(ProjectRole(project_pk=project.pk, user_pk=user.pk, role=role))
    else:
        membership.role = role
    db.commit()
    return Response(
        f"User '{username}' is now {role} of project '{project.id}'.", 200, mimetype="text/plain"
    )


@archive_route(bp, "/projects/<project_id>/users/<group>/<username>", methods=["DELETE"])
def remove_member(project_id: str, group: str, username: str) -> Response:
    project = resolve_object(f"projects/{project_id}", "own")
    auth.refuse_job("change project memberships")
    role = _group(group)
    user = _find_user(username)
    db = get_db()
    membership = db.scalar(
        select(ProjectRole).where(
            ProjectRole.project_pk == project.pk,
            ProjectRole.user_pk == user.pk,
            ProjectRole.role == role,
        )
    )
    if membership is None:
        raise NotFound(f"User '{username}' is not among the {role}s of project '{project.id}'.")
    # As in XNAT, the last Owner may go: site admins still manage the project.
    db.delete(membership)
    db.commit()
    return Response("", 200)


@bp.route("/xapi/access/projects", methods=["GET"])
def my_project_access() -> Response:
    """The caller's role in each project they belong to (xnatpy's `access_levels`)."""
    user = auth.require_login()
    return jsonify(
        [
            {
                "ID": role.project.id,
                "name": role.project.name,
                "secondaryId": role.project.secondary_id,
                "description": role.project.description,
                "role": role.role.lower(),
            }
            for role in sorted(user.roles, key=lambda r: r.project.id)
            if auth.job_project() in (None, role.project.id)  # a job sees its project only
        ]
    )
