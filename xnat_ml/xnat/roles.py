"""The caller's role in a project, read from any XNAT: the verbs check it before they act.

A real XNAT knows nothing of the ML layer's rules (only Owners install models, push configs,
promote, ...; docs/server.md's role table), so each verb checks them itself before it writes:
a Member's `promote` ends at once with one line instead of half an upload. The embedded server
also enforces them at the ML_* resources.
"""

from __future__ import annotations

from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import segment

ROLES = ("Collaborator", "Member", "Owner")  # weakest first
ADMIN_ROLE = "Administrator"  # XNAT's site role; a site admin counts as a project Owner


def _role_name(value: object) -> str | None:
    """`owner`, `Owners`, `Member` ... as one of ROLES; None for anything else."""
    name = str(value).strip().lower().removesuffix("s")
    return next((role for role in ROLES if role.lower() == name), None)


def _is_site_admin(session: XNATSession) -> bool:
    user = session.logged_in_user
    if not user:
        return False
    answer = session.get(
        f"/xapi/users/{segment(user)}/roles", accepted_status=[200, 403, 404]
    )  # XNAT shows the roles to the user and to admins; a 403 or 404 means "not an admin"
    return answer.status_code == 200 and ADMIN_ROLE in (answer.json() or [])


def _member_role(session: XNATSession, project: str) -> str | None:
    levels = session.get("/xapi/access/projects", accepted_status=[200, 404])
    if levels.status_code == 200:
        rows = [r for r in levels.json() if isinstance(r, dict) and r.get("ID") == project]
        return _role_name(rows[0].get("role")) if rows else None
    # before XNAT 1.8: the project's user list (readable by its members)
    listed = session.get(
        f"/data/projects/{segment(project)}/users",
        query={"format": "json"}, accepted_status=[200, 403, 404],
    )  # fmt: skip
    if listed.status_code != 200:
        return None
    me = session.logged_in_user
    rows = [r for r in listed.json()["ResultSet"]["Result"] if r.get("login") == me]
    return _role_name(rows[0].get("displayname")) if rows else None


def project_role(session: XNATSession, project: str) -> str | None:
    """The caller's role in the project (Owner for a site admin), None when outside it."""
    with reported_as(f"project {project}: your role"):
        role = _member_role(session, project)
        if role != "Owner" and _is_site_admin(session):
            return "Owner"
    return role


def require_role(session: XNATSession, project: str, needed: str, action: str) -> str:
    """The caller's role, if it is `needed` or stronger; else XnatMlError naming both."""
    role = project_role(session, project)
    if role is None or ROLES.index(role) < ROLES.index(needed):
        raise XnatMlError(
            f"project {project}: {action} needs the {needed} role "
            f"(you are {role or 'not a member of the project'})"
        )
    return role


def require_site_admin(session: XNATSession, action: str) -> None:
    """XnatMlError naming the user unless they are a site administrator."""
    with reported_as("your site roles"):
        admin = _is_site_admin(session)
    if not admin:
        raise XnatMlError(
            f"user {session.logged_in_user}: {action} needs a site administrator "
            f"(XNAT's {ADMIN_ROLE} role)"
        )
