"""The dashboard's pages: per project, models, label map, datasets, configs, launches, runs, jobs
and sessions; every page needs login, every form a CSRF token.

Each page reads XNAT as the logged-in user with the functions the CLI verbs use; what a role
may not do is refused by the same checks (`require_role`) and by XNAT itself, and shown as one
line on the page it came from. Buttons a role has no right to are not drawn.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import BadRequest, HTTPException

from xnat_ml import scratch
from xnat_ml.dashboard import launch_forms, login, overlay
from xnat_ml.errors import XnatMlError
from xnat_ml.layout import CONFIGS_RESOURCE, LABELMAP_FILE, MODELS_RESOURCE, ROI_COLLECTION_XSI
from xnat_ml.xnat.roles import ROLES, project_role
from xnat_ml.xnat.uris import segment

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")  # fmt: skip

# what each action needs (docs/server.md's role table)
NEEDS = {"install": "Owner", "promote": "Owner", "config": "Owner", "labelmap": "Owner",
         "build": "Member", "train": "Member", "finetune": "Member", "infer": "Member",
         "evaluate": "Member", "kill": "Member", "rerun": "Member"}  # fmt: skip
LAUNCHABLE = ("train", "finetune", "infer", "evaluate", "promote")


@bp.before_request
def _guard() -> Response | None:
    """Every page but the login form needs a logged-in user; every POST a CSRF token."""
    if request.endpoint not in ("dashboard.login_form", "dashboard.static"):
        if not login.logged_in():
            return redirect(url_for("dashboard.login_form", next=request.full_path))
    login.check_csrf()
    return None


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": login.csrf_token, "may": _may, "user": session.get("user")}


def _may(role: str | None, action: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(NEEDS[action])


def shows_errors(view: Callable) -> Callable:
    """A refusal (XnatMlError: XNAT's 403, a role check, a bad value) is one line on the page
    the user came from, never a stack trace."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except XnatMlError as exc:
            if request.method == "POST":
                flash(str(exc), "error")
                return redirect(request.referrer or url_for("dashboard.projects"))
            return render_template("error.html", message=str(exc)), 403 if "403" in str(
                exc) or "role" in str(exc) else 400  # fmt: skip

    return wrapped


# ---------------------------------------------------------------------------- login


@bp.route("/login", methods=["GET", "POST"])
def login_form() -> Any:
    if request.method == "GET":
        return render_template("login.html", xnat=login.xnat_url())
    user, password = request.form.get("username", ""), request.form.get("password", "")
    try:
        if not user or not password:
            raise XnatMlError("login: give your XNAT user name and password")
        login.log_in(user, password)
    except XnatMlError as exc:
        return render_template("login.html", xnat=login.xnat_url(), error=str(exc)), 401
    target = request.args.get("next", "")
    # only a path of this dashboard: never another site (an open redirect)
    if not target.startswith(url_for("dashboard.projects")) or "//" in target:
        target = url_for("dashboard.projects")
    return redirect(target)


@bp.post("/logout")
def logout() -> Response:
    login.log_out()
    return redirect(url_for("dashboard.login_form"))


# ---------------------------------------------------------------------------- projects


@bp.get("/")
@shows_errors
def projects() -> str:
    from xnat_ml.xnat.queries import list_rows

    rows = list_rows(login.client(), "/data/projects", columns="ID,name,description")
    return render_template("projects.html", projects=rows)


def _role(project: str) -> str:
    """The caller's role; XnatMlError (shown as a refusal) for a user outside the project."""
    role = project_role(login.client(), project)
    if role is None:
        raise XnatMlError(f"project {project}: you are not a member of it (or it does not exist)")
    return role


@bp.get("/p/<project>/")
@shows_errors
def project(project: str) -> str:
    from xnat_ml.datasets.versions import list_versions
    from xnat_ml.training.project_configs import list_configs
    from xnat_ml.training.project_files import list_paths
    from xnat_ml.training.project_models import list_models
    from xnat_ml.training.project_runs import list_runs, read_run_json
    from xnat_ml.xnat.queries import list_experiments

    role = _role(project)
    xnat = login.client()
    runs = []
    for run in list_runs(xnat, project):
        try:
            runs.append(read_run_json(xnat, project, run, "status.json") | {"run": run})
        except XnatMlError as exc:
            runs.append({"run": run, "state": "unreadable", "message": str(exc)})
    labelmap = LABELMAP_FILE in list_paths(xnat, project, MODELS_RESOURCE)
    return render_template(
        "project.html", project=project, role=role, models=list_models(xnat, project),
        datasets=list_versions(xnat, project), configs=list_configs(xnat, project), runs=runs,
        labelmap=_labelmap_text(project) if labelmap else None, launchable=LAUNCHABLE,
        sessions=[e for e in list_experiments(xnat, project)
                  if str(e.get("xsiType", "")).endswith("SessionData")],
    )  # fmt: skip


def _labelmap_text(project: str) -> str:
    from xnat_ml.training.project_files import read_text

    return read_text(login.client(), project, MODELS_RESOURCE, LABELMAP_FILE)


# ---------------------------------------------------------------------------- models


@bp.get("/p/<project>/models/<name>/v<int:number>")
@shows_errors
def model(project: str, name: str, number: int) -> str:
    from xnat_ml.training.derived import dice_summary, latest_evaluation
    from xnat_ml.training.project_models import find_model, read_model_card

    role = _role(project)
    xnat = login.client()
    number = find_model(xnat, project, name, number)
    card = read_model_card(xnat, project, name, number)
    lineage = [card]
    while lineage[-1].parent is not None and len(lineage) < 20:  # the parents, newest first
        parent = lineage[-1].parent
        try:
            lineage.append(read_model_card(xnat, project, parent.name, int(parent.version)))
        except (XnatMlError, ValueError):
            break
    evaluation = latest_evaluation(xnat, project, name, number)
    return render_template("model.html", project=project, role=role, name=name, number=number,
                           card=card.to_json(), lineage=lineage,
                           testing=dice_summary(evaluation) if evaluation else None)  # fmt: skip


@bp.post("/p/<project>/models")
@shows_errors
def install_model(project: str) -> Response:
    from xnat_ml.training.project_models import install_model as install
    from xnat_ml.xnat.roles import require_role

    name = request.form.get("name", "").strip()
    upload = request.files.get("bundle")
    if not name or upload is None or not upload.filename:
        raise XnatMlError("model install: give a name and a bundle (.zip)")
    xnat = login.client()
    require_role(xnat, project, "Owner", "model install")
    with scratch.temporary("dashboard-model-") as tmp:
        bundle = Path(tmp) / "bundle.zip"
        upload.save(bundle)
        number, _card = install(xnat, project, bundle, name)
    flash(f"model {name} v{number}: installed", "ok")
    return redirect(url_for("dashboard.model", project=project, name=name, number=number))


@bp.post("/p/<project>/labelmap")
@shows_errors
def labelmap(project: str) -> Response:
    from xnat_ml.imaging.labelmap import parse_labelmap
    from xnat_ml.training.project_files import file_uri
    from xnat_ml.xnat.responses import reported_as
    from xnat_ml.xnat.roles import require_role

    text = request.form.get("labelmap", "")
    parse_labelmap(text, f"project {project} label map")  # a broken map is refused here
    xnat = login.client()
    require_role(xnat, project, "Owner", "label map")
    with reported_as(f"project {project} {MODELS_RESOURCE}/{LABELMAP_FILE}"):
        xnat.put(file_uri(project, MODELS_RESOURCE, LABELMAP_FILE), data=text.encode(),
                 query={"overwrite": "true", "inbody": "true"})  # fmt: skip
    flash("label map stored", "ok")
    return redirect(url_for("dashboard.project", project=project))


# ---------------------------------------------------------------------------- datasets


@bp.get("/p/<project>/datasets/<name>/v<int:number>")
@shows_errors
def dataset(project: str, name: str, number: int) -> str:
    from xnat_ml.datasets.versions import changes_before, list_versions, pick_version, read_json

    role = _role(project)
    xnat = login.client()
    versions = list_versions(xnat, project).get(name, [])  # listed once for the whole page
    version = pick_version(versions, project, name, number)
    report = read_json(xnat, project, version, "report.json")
    definition = json.dumps(read_json(xnat, project, version, "definition.json"), indent=2)
    changes, since = changes_before(xnat, project, version, versions) or (None, None)
    return render_template("dataset.html", project=project, role=role, name=name,
                           number=number, report=report, versions=versions,
                           definition=definition, changes=changes, since=since)  # fmt: skip


@bp.post("/p/<project>/datasets")
@shows_errors
def build_dataset(project: str) -> Response:
    from xnat_ml.datasets.project_build import BuildRefused, build_in_project
    from xnat_ml.xnat.roles import require_role

    name = request.form.get("name", "").strip()
    definition = request.form.get("definition", "")
    if not name or not definition.strip():
        raise XnatMlError("dataset build: give a name and a definition (JSON)")
    xnat = login.client()
    require_role(xnat, project, "Member", "dataset build")
    try:
        built = build_in_project(xnat, project, definition, name, source="the definition given")
    except BuildRefused as exc:  # say why, from the report, rather than point to a file
        reasons = sorted({r.message for o in exc.build.outcomes for r in o.reasons})
        raise XnatMlError(f"{exc}; sessions left out because: {'; '.join(reasons[:5])}") from None
    if built.version is None:
        flash(f"dataset {name}: nothing changed since its latest version", "ok")
        return redirect(url_for("dashboard.project", project=project))
    flash(f"dataset {name} v{built.version.number}: built", "ok")
    return redirect(url_for("dashboard.dataset", project=project, name=name,
                            number=built.version.number))  # fmt: skip


# ---------------------------------------------------------------------------- configs


@bp.post("/p/<project>/configs")
@shows_errors
def push_config(project: str) -> Response:
    from xnat_ml.training.config import load_config
    from xnat_ml.training.project_configs import push_config as push
    from xnat_ml.xnat.roles import require_role

    name = request.form.get("name", "").strip()
    text = request.form.get("config", "")
    if not name or not text.strip():
        raise XnatMlError("config push: give a name and the config (JSON)")
    xnat = login.client()
    require_role(xnat, project, "Owner", "config push")
    with scratch.temporary("dashboard-config-") as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(text)
        load_config(path)
        stored = push(xnat, project, path, name)
    flash(f"training config {stored}: stored in {CONFIGS_RESOURCE}", "ok")
    return redirect(url_for("dashboard.project", project=project))


@bp.get("/p/<project>/configs/<name>")
@shows_errors
def config(project: str, name: str) -> str:
    from xnat_ml.training.project_files import read_text

    role = _role(project)
    text = read_text(login.client(), project, CONFIGS_RESOURCE, f"{name}.json")
    return render_template("config.html", project=project, role=role, name=name, text=text)


# ---------------------------------------------------------------------------- launches


@bp.route("/p/<project>/launch/<command>", methods=["GET", "POST"])
@shows_errors
def launch(project: str, command: str) -> Any:
    if command not in LAUNCHABLE:
        raise XnatMlError(f"launch {command}: not a command the dashboard launches")
    role = _role(project)
    xnat = login.client()
    root = request.values.get("root")  # a session, for infer
    form = launch_forms.launch_form(xnat, project, command, root)
    if request.method == "GET":
        for f in form.fields:  # a link may fill fields in (Promote on a run's page: RUN)
            f.value = request.args.get(f.name, f.value)
        return render_template("launch.html", project=project, role=role, form=form,
                               command=command, root=root)  # fmt: skip
    if not _may(role, command):
        raise XnatMlError(f"project {project}: {command} needs the {NEEDS[command]} role "
                          f"(you are {role})")  # fmt: skip
    job = launch_forms.submit(xnat, project, form, request.form)
    flash(f"{command}: job {job} launched", "ok")
    return redirect(url_for("dashboard.jobs", project=project))


# ---------------------------------------------------------------------------- runs


@bp.get("/p/<project>/runs/<run>")
@shows_errors
def run(project: str, run: str) -> str:
    role = _role(project)
    return render_template("run.html", project=project, role=role, run=run,
                           status=_run_status(project, run),
                           tensorboard=f"xnat-ml runs tensorboard --project {project} {run} "
                                       f"--url {login.xnat_url()}")  # fmt: skip


def _run_status(project: str, run: str) -> dict[str, Any]:
    from xnat_ml.training.project_runs import run_status

    status = run_status(login.client(), project, run)
    if status is None:
        raise XnatMlError(f"run {run}: not in project {project}'s ML_RUNS")
    return status


@bp.get("/p/<project>/runs/<run>/status.json")
@shows_errors
def run_status_json(project: str, run: str) -> Response:
    """The status and the metrics so far, for the page's live view and curves."""
    import csv
    import io

    from xnat_ml.training.project_files import list_paths, read_text
    from xnat_ml.training.run_folder import METRICS_FILE

    status = _run_status(project, run)
    rows: list[dict[str, Any]] = []
    xnat = login.client()
    if f"{run}/{METRICS_FILE}" in list_paths(xnat, project, "ML_RUNS"):
        text = read_text(xnat, project, "ML_RUNS", f"{run}/{METRICS_FILE}")
        rows = list(csv.DictReader(io.StringIO(text)))
    return jsonify({"status": status, "metrics": rows})


# ---------------------------------------------------------------------------- jobs


@bp.get("/p/<project>/jobs")
@shows_errors
def jobs(project: str) -> str:
    role = _role(project)
    wanted = {k: v for k in ("status", "command") if (v := request.args.get(k, "").strip())}
    rows = login.client().get_json("/xapi/containers", query={"project": project})
    rows = [r for r in rows if all(
        str(r.get("status" if k == "status" else "command-name", "")).lower() == v.lower()
        for k, v in wanted.items())]  # fmt: skip
    rows.sort(key=lambda r: -int(r.get("id") or 0))
    return render_template("jobs.html", project=project, role=role, jobs=rows, wanted=wanted)


@bp.get("/p/<project>/jobs/<int:job>/log")
@shows_errors
def job_log(project: str, job: int) -> str:
    from xnat_ml.xnat.responses import reported_as

    role = _role(project)
    xnat = login.client()
    with reported_as(f"job {job}"):
        record = xnat.get_json(f"/xapi/containers/{job}")
        if record.get("project") != project:
            raise XnatMlError(f"job {job}: not a job of project {project}")
        logs = {kind: xnat.get(f"/xapi/containers/{job}/logs/{kind}",
                               accepted_status=[200, 204, 404]).text
                for kind in ("stdout", "stderr")}  # fmt: skip
    return render_template("job_log.html", project=project, role=role, job=record, logs=logs)


@bp.post("/p/<project>/jobs/<int:job>/kill")
@shows_errors
def kill_job(project: str, job: int) -> Response:
    from xnat_ml.xnat.responses import reported_as

    with reported_as(f"job {job}: kill"):
        login.client().post(f"/xapi/containers/{job}/kill", accepted_status=[200, 204])
    flash(f"job {job}: kill asked", "ok")
    return redirect(url_for("dashboard.jobs", project=project))


@bp.post("/p/<project>/jobs/<int:job>/rerun")
@shows_errors
def rerun_job(project: str, job: int) -> Response:
    new = launch_forms.rerun(login.client(), project, job)
    flash(f"job {job}: launched again as job {new}", "ok")
    return redirect(url_for("dashboard.jobs", project=project))


# ---------------------------------------------------------------------------- sessions


@bp.get("/p/<project>/sessions/<session_id>")
@shows_errors
def session_page(project: str, session_id: str) -> str:
    from xnat_ml.xnat.queries import list_rows

    role = _role(project)
    xnat = login.client()
    rows = list_rows(xnat, f"/data/projects/{segment(project)}/experiments/"
                           f"{segment(session_id)}/assessors",
                     columns="ID,label,xsiType,collectionType")  # fmt: skip
    collections = [r | {"origin": "AI" if str(r.get("label", "")).startswith("AI_") else "human"}
                   for r in rows if r.get("xsiType") == ROI_COLLECTION_XSI]  # fmt: skip
    return render_template("session.html", project=project, role=role, session_id=session_id,
                           collections=collections)  # fmt: skip


@bp.get("/p/<project>/sessions/<session_id>/overlay/<collection>.png")
@shows_errors
def overlay_png(project: str, session_id: str, collection: str) -> Response:
    _role(project)
    png = overlay.mid_slice_png(login.client(), project, session_id, collection)
    return Response(png, mimetype="image/png")


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Any:
    if isinstance(exc, BadRequest) and request.method == "POST":
        return render_template("error.html", message=exc.description), 400
    return render_template("error.html", message=exc.description), exc.code or 500
