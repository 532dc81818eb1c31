"""Who is calling and what they may do: basic auth, JSESSIONID, alias tokens, project roles.

Credentials are checked in XNAT's order: an Authorization header (username/password, or alias
token/secret) wins over the JSESSIONID cookie; a header with wrong credentials is a 401 even when
a valid cookie is present. Access follows XNAT's project roles: Collaborators read, Members also
create and edit data, Owners also manage membership and delete the project; site admins pass
everything. Missing objects are 404 (the caller resolves the object before checking its role).

A job's token (bound to a job: `AliasToken.job_id`), the tokens minted with it and the sessions
they open act only inside the job's project, with the launcher's role there (a site admin's
job as the project's Owner): outside it they see and change nothing, and they are never a site
admin, so users, passwords, settings, commands and other users' tokens are out of reach;
`refuse_job` guards what an Owner could otherwise do from a job (memberships, wrapper switches,
new projects). Code a job runs is the data's to choose (a config, a bundle, a Member's
script): it must not carry its launcher's whole account.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from flask import Response, current_app, g, has_request_context, request
from sqlalchemy import delete, select, update
from werkzeug.exceptions import Forbidden, NotFound, Unauthorized
from werkzeug.security import check_password_hash, generate_password_hash

from xnat_ml.containers.jobs import Job
from xnat_ml.server.store.db import get_db, session_factory
from xnat_ml.server.store.models import (
    ROLES,
    AliasToken,
    Project,
    ProjectRole,
    User,
    WebSession,
    utcnow,
)

# What each access level needs, as the weakest sufficient role.
ACCESS_LEVELS = {"read": "Collaborator", "edit": "Member", "own": "Owner"}

_MAC_KEY = secrets.token_bytes(32)
_recently_verified: dict[bytes, datetime] = {}  # mac(hash, password) → when it was verified
_VERIFIED_TTL = timedelta(minutes=5)


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def password_matches(user: User, password: str) -> bool:
    """Check a password; a success is remembered briefly so basic auth on every call stays cheap."""
    mac = hmac.new(_MAC_KEY, f"{user.password_hash}\0{password}".encode(), "sha256").digest()
    seen = _recently_verified.get(mac)
    if seen is not None and utcnow() - seen < _VERIFIED_TTL:
        return True
    if not check_password_hash(user.password_hash, password):
        return False
    if len(_recently_verified) > 4096:
        _recently_verified.clear()
    _recently_verified[mac] = utcnow()
    return True


def _token_digest(secret: str) -> str:
    # Secrets are 192 random bits, so a plain digest is as safe as a slow hash and keeps
    # per-request token checks fast.
    return hashlib.sha256(secret.encode()).hexdigest()


def authenticate(username: str, password: str) -> User | None:
    """The enabled user these credentials (password or alias token) belong to, else None.

    A matching token is kept as the request's `current_token()`: what the request opens or
    mints (a session, a token) then belongs to that token and dies with it."""
    db = get_db()
    user = db.scalar(select(User).where(User.username == username))
    if user is not None:
        return user if user.enabled and password_matches(user, password) else None
    token = validate_token(username, password)
    if token is None or not token.user.enabled:
        return None
    g.auth_token = token
    return token.user


def _session_user(session_id: str) -> User | None:
    web_session = get_db().get(WebSession, session_id)
    now = utcnow()
    if web_session is None or web_session.expires < now or not web_session.user.enabled:
        return None
    g.auth_token = web_session.token
    lifetime = timedelta(seconds=current_app.config["SESSION_LIFETIME_S"])
    if web_session.expires - now < lifetime / 2 and web_session.token is None:
        # In use: slide the expiry (idle timeout). A token's session keeps the token's expiry.
        # End this request's transaction first: in a POST it holds the write lock (BEGIN
        # IMMEDIATE), and the writer below would wait on it until "database is locked".
        get_db().commit()
        with session_factory()() as writer:  # own transaction: never upgrade this request's read
            writer.execute(
                update(WebSession).where(WebSession.id == session_id).values(expires=now + lifetime)
            )
            writer.commit()
    return web_session.user


def current_user() -> User | None:
    """The authenticated caller of this request, or None (cached for the request)."""
    if "user" not in g:
        g.user = None
        g.auth_failed = False
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            g.user = authenticate(auth.username or "", auth.password or "")
            g.auth_failed = g.user is None
        elif session_id := request.cookies.get(SESSION_COOKIE):
            g.user = _session_user(session_id)
    return g.user


def current_token() -> AliasToken | None:
    """The alias token behind this request's credentials (directly, or through the session it
    opened), or None when they came from a password. Set as the credentials are checked."""
    return g.get("auth_token")


def require_login() -> User:
    """The caller, or a 401 when no valid credentials came with the request."""
    user = current_user()
    if user is None:
        if g.get("auth_failed"):
            raise Unauthorized("Login attempt failed: wrong username, password or token.")
        raise Unauthorized("Authentication required: send basic auth or a JSESSIONID cookie.")
    return user


# What anyone may reach without credentials, as on XNAT: the landing page, version and site
# identity (clients probe them before logging in), logging out, and the login service itself
# (its credentials come in the body). Every other endpoint answers 401 first, before any
# validation could tell an anonymous caller what exists.
PUBLIC_ENDPOINTS = frozenset({
    "static", "meta.root", "meta.version", "meta.build_info", "meta.site_id",
    "login.delete_jsession", "login.services_auth",
    "monailabel.auth_enabled", "monailabel.auth_token",  # MONAI Label's login (docs/monailabel.md)
})  # fmt: skip


# Blueprints with a login of their own: the ML dashboard (/ml/) logs its users in with a form and
# calls this server's REST API with their alias token, as it calls any XNAT.
OWN_LOGIN_BLUEPRINTS = frozenset({"dashboard"})

# Blueprints that take their callers' credentials themselves and pass them on to this server's
# REST API, where these checks apply (the MONAI Label API's Bearer tokens are alias tokens):
# a request to them with an Authorization header goes on; one without is refused here as usual.
SELF_AUTHENTICATING_BLUEPRINTS = frozenset({"monailabel"})


def login_unless_public() -> None:
    """`before_request` hook: authenticate every request to a non-public endpoint."""
    if request.endpoint is None or request.endpoint in PUBLIC_ENDPOINTS:
        return
    if request.blueprint in SELF_AUTHENTICATING_BLUEPRINTS and "Authorization" in request.headers:
        return
    if request.blueprint not in OWN_LOGIN_BLUEPRINTS:
        require_login()


def require_admin() -> User:
    user = require_login()
    if not is_admin(user):
        raise Forbidden(f"User '{user.username}' is not a site administrator"
                        f"{' (not with a job token)' if user.is_admin else ''}.")  # fmt: skip
    return user


def is_admin(user: User) -> bool:
    """Whether the caller acts as a site admin now: an admin, not through a job's token."""
    return user.is_admin and job_project() is None


def job_project() -> str | None:
    """The ID of the project of the job this request's credentials are bound to (its token, a
    token minted with it, a session either opened), else None. "" when the job is gone."""
    if "job_project" not in g:
        if has_request_context():
            current_user()  # the credentials decide: check them first
        token = current_token()
        job_id = token.job_id if token is not None else None
        g.job_project = None if job_id is None else (
            get_db().scalar(select(Job.project).where(Job.id == job_id)) or ""
        )  # fmt: skip
    return g.job_project


def refuse_job(action: str) -> None:
    """403 when the request comes with a job's token: `action` is for people, not jobs."""
    if job_project() is not None:
        raise Forbidden(f"A job's token may not {action}.")


@contextmanager
def acting_as(user: User) -> Iterator[User]:
    """Server work outside a request (the Event Service's launches) done as `user`, with their
    own rights (no token), under the same checks as their requests."""
    keys = ("user", "auth_failed", "auth_token", "job_project")
    saved = {key: g.pop(key) for key in keys if key in g}
    g.user, g.auth_failed = user, False
    try:
        yield user
    finally:
        for key in keys:
            g.pop(key, None)
        for key, value in saved.items():
            setattr(g, key, value)


def role_in(user: User, project: Project) -> str | None:
    """The user's role in the project (Owner, Member, Collaborator) or None."""
    return get_db().scalar(
        select(ProjectRole.role).where(
            ProjectRole.user_pk == user.pk, ProjectRole.project_pk == project.pk
        )
    )


def may(user: User, project: Project, access: str) -> bool:
    """Whether the user has `access` (read, edit, own) on the project (a job's token: only
    on the job's project)."""
    scope = job_project()
    if scope is not None and project.id != scope:
        return False
    if user.is_admin:
        return True
    if access == "read" and project.accessibility == "public":
        return True
    role = role_in(user, project)
    return role is not None and ROLES.index(role) >= ROLES.index(ACCESS_LEVELS[access])


def require_project_role(project: Project | str, access: str = "read") -> User:
    """The caller if they have `access` (read, edit, own) on the project; else 401/403/404."""
    user = require_login()
    if isinstance(project, str):
        found = get_db().scalar(select(Project).where(Project.id == project))
        if found is None:
            raise NotFound(f"Project '{project}' does not exist.")
        project = found
    if not may(user, project, access):
        raise Forbidden(
            f"User '{user.username}' may not {access} project '{project.id}'"
            f" (needs the {ACCESS_LEVELS[access]} role or higher)."
        )
    return user


def readable_project_pks(user: User) -> list[int] | None:
    """Primary keys of the projects the user may read; None means all (site admin). A job's
    token reads its own project at most."""
    db = get_db()
    readable = None
    if not user.is_admin:
        own = db.scalars(select(ProjectRole.project_pk).where(ProjectRole.user_pk == user.pk))
        public = db.scalars(select(Project.pk).where(Project.accessibility == "public"))
        readable = sorted(set(own) | set(public))
    scope = job_project()
    if scope is None:
        return readable
    in_scope = db.scalars(select(Project.pk).where(Project.id == scope))
    return [pk for pk in in_scope if readable is None or pk in readable]


# ----------------------------------------------------------------------------- sessions, tokens

SESSION_COOKIE = "JSESSIONID"


def with_session_cookie(response: Response, session_id: str) -> Response:
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="Lax", path="/")
    return response


def start_session(user: User) -> str:
    """Open a web session for the user; returns its JSESSIONID. A session opened with an alias
    token belongs to the token (ends with it, never outlives it)."""
    token = current_token()
    db = get_db()
    db.commit()  # end the read that found the user: a write must not upgrade a stale snapshot
    now = utcnow()
    db.execute(delete(WebSession).where(WebSession.expires < now))
    session_id = secrets.token_hex(16).upper()
    expires = now + timedelta(seconds=current_app.config["SESSION_LIFETIME_S"])
    db.add(
        WebSession(
            id=session_id,
            user_pk=user.pk,
            token_alias=token.alias if token is not None else None,
            expires=min(expires, token.expires) if token is not None else expires,
        )
    )
    db.commit()
    return session_id


def end_session(session_id: str) -> None:
    db = get_db()
    db.execute(delete(WebSession).where(WebSession.id == session_id))
    db.commit()


def issue_token(
    user: User, *, parent: AliasToken | None = None, job_id: int | None = None
) -> tuple[AliasToken, str]:
    """A new alias token for the user and its secret (only the secret's digest is stored).

    A token minted with another token (`parent`) is its child: it expires no later, belongs to
    the same job, and is deleted with it. `job_id` binds a token to the job it was issued for.
    """
    db = get_db()
    db.commit()  # as in start_session: write in a fresh transaction
    now = utcnow()
    db.execute(delete(AliasToken).where(AliasToken.expires < now))
    secret = secrets.token_hex(24)
    expires = now + timedelta(seconds=current_app.config["TOKEN_LIFETIME_S"])
    if parent is not None:
        expires, job_id = min(expires, parent.expires), parent.job_id
    token = AliasToken(
        alias=str(uuid.uuid4()),
        secret_hash=_token_digest(secret),
        user_pk=user.pk,
        parent_alias=parent.alias if parent is not None else None,
        job_id=job_id,
        created=now,
        expires=expires,
    )
    db.add(token)
    db.commit()
    return token, secret


def validate_token(alias: str, secret: str) -> AliasToken | None:
    token = get_db().get(AliasToken, alias)
    if token is None or token.expires < utcnow():
        return None
    return token if hmac.compare_digest(token.secret_hash, _token_digest(secret)) else None


# ----------------------------------------------------------------------------- revocation
# Deleting a token deletes (by foreign-key cascade) the tokens minted with it and the sessions
# opened with it. These functions do not commit: the caller's change and the revocation commit
# together.


def revoke_token(alias: str) -> None:
    get_db().execute(delete(AliasToken).where(AliasToken.alias == alias))


def revoke_job_tokens(job_id: int) -> None:
    """End every token issued for the job (and all they minted): called when the job ends."""
    get_db().execute(delete(AliasToken).where(AliasToken.job_id == job_id))


def revoke_project_job_tokens(project_id: str) -> None:
    """End the tokens of every job of the project: called when the project is deleted."""
    jobs_of_project = select(Job.id).where(Job.project == project_id)
    get_db().execute(delete(AliasToken).where(AliasToken.job_id.in_(jobs_of_project)))


def end_user_access(user: User, keep_session: str | None = None) -> None:
    """End the user's sessions (except `keep_session`) and alias tokens: after a password
    change or when the user is disabled."""
    db = get_db()
    db.execute(delete(AliasToken).where(AliasToken.user_pk == user.pk))
    others = WebSession.id != (keep_session or "")
    db.execute(delete(WebSession).where(WebSession.user_pk == user.pk, others))
