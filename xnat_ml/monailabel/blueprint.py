"""MONAI Label's REST API for one XNAT project, as a Flask blueprint.

The embedded server mounts it at ``/monailabel/<project>/`` and reaches itself at its own
address (SITE_URL, else the one it listens on; never a request's Host header); ``xnat-ml
monailabel`` registers it at ``/`` for one project, talking to the XNAT it was given. Either way
every XNAT call goes over REST with the caller's credentials (caller.py), and the ML layer's
roles decide: Collaborators read and infer (nothing stored), Members save labels and train;
a user outside the project gets 404s. Errors answer as MONAI Label's FastAPI does: a status and
``{"detail": "..."}``.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import requests
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from urllib3 import encode_multipart_formdata
from werkzeug.exceptions import HTTPException

from xnat_ml import __version__, scratch
from xnat_ml.bounded_json import load_json
from xnat_ml.errors import XnatMlError
from xnat_ml.monailabel import caller as callers
from xnat_ml.monailabel import images as imgs
from xnat_ml.monailabel import models, training
from xnat_ml.monailabel.inference import infer_image, write_ai_seg
from xnat_ml.monailabel.labels import save_label
from xnat_ml.monailabel.scans import scan_image
from xnat_ml.monailabel.volumes import EXTENSIONS, write_labels
from xnat_ml.training.project_models import list_models

bp = Blueprint("monailabel", __name__, url_prefix="/monailabel/<project>")

# app.config keys (xnat-ml monailabel sets them; the embedded server needs none)
XNAT_URL = "MONAILABEL_XNAT_URL"  # the XNAT to talk to; unset: this server itself
LOGIN = "MONAILABEL_LOGIN"  # (user, password) for callers without credentials; unset: none
MODELS = "MONAILABEL_MODELS"  # NAME or NAME:N list to serve; unset: every model
DEVICE = "MONAILABEL_DEVICE"  # torch device for inference
MAX_UPLOAD = "MONAILABEL_MAX_UPLOAD_BYTES"
DEFAULT_MAX_UPLOAD = 512 * 1024 * 1024
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
_HTTP_STATUS = re.compile(r"answered HTTP ([45]\d\d)")
STRATEGIES = {"random": "a random image without a final label",
              "first": "the first image without a final label"}  # fmt: skip


# ----------------------------------------------------------------------------- plumbing


def register_standalone(app: Flask, project: str) -> None:
    """Serve the API at ``/`` for ``project`` (``xnat-ml monailabel``)."""
    app.register_blueprint(bp, url_prefix="", url_defaults={"project": project})


def _xnat_url() -> str:
    config = current_app.config
    if config.get(XNAT_URL):
        return str(config[XNAT_URL]).rstrip("/")
    if config.get("SITE_URL"):
        return str(config["SITE_URL"]).rstrip("/")
    bound = config.get("XNAT_ML_BOUND_ADDRESSES")  # what `xnat-ml serve` listens on
    if not bound:
        raise XnatMlError("XNAT server: this server's own address is unknown; set SITE_URL")
    host, port = bound[0]
    host = _WILDCARDS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _caller(project: str) -> callers.Caller:
    login = callers.credentials(request.headers.get("Authorization"), current_app.config.get(LOGIN))
    return callers.caller(_xnat_url(), project, login)


def _allowed() -> list[str] | None:
    return current_app.config.get(MODELS) or None


def _params() -> dict[str, Any]:
    """The request's ``params``: a multipart field, a form field or the JSON body."""
    if request.mimetype == "application/json":
        raw: str | bytes = request.get_data(cache=True)
    else:
        raw = request.form.get("params", "")
    if not raw or not raw.strip():
        return {}
    value = load_json(raw, "params", max_bytes=64 * 1024)
    if not isinstance(value, dict):
        raise XnatMlError("params: not a JSON object")
    return value


def _status(exc: XnatMlError) -> int:
    if isinstance(exc, callers.Unauthorized):
        return 401
    if isinstance(exc, callers.Forbidden):
        return 404 if str(exc).endswith("not found") else 403
    if isinstance(exc, imgs.UnknownImage | models.UnknownModel):
        return 404
    if isinstance(exc, training.NotReady):
        return 409
    found = _HTTP_STATUS.search(str(exc))
    if found:  # XNAT's refusal as it is (403 hides what exists), a full disk as 507, else 502
        status = int(found[1])
        return {403: 404, 507: 507}.get(status, status if status < 500 else 502)
    return 422 if "cannot reach" not in str(exc) else 502


def _detail(status: int, detail: str) -> Response:
    response = jsonify({"detail": detail})
    response.status_code = status
    return response


@bp.errorhandler(XnatMlError)
def _refused(exc: XnatMlError) -> Response:
    return _detail(_status(exc), str(exc).splitlines()[0][:500])


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Response:
    return _detail(exc.code or 500, exc.name if exc.code == 404 else str(exc.description))


@bp.before_request
def _bounded() -> Response | None:
    limit = int(current_app.config.get(MAX_UPLOAD) or DEFAULT_MAX_UPLOAD)
    if (request.content_length or 0) > limit:
        return _detail(413, f"request body: larger than {limit} bytes")
    request.max_content_length = limit  # a body sent without a length is cut here too
    return None


# ----------------------------------------------------------------------------- auth


@bp.get("/auth/")
def auth_enabled(project: str) -> Response:
    return jsonify({"enabled": True, "client_id": "xnat-ml", "realm": _xnat_url()})


@bp.post("/auth/token")
def auth_token(project: str) -> Response:
    """XNAT's user name and password (form fields) -> an XNAT alias token as a Bearer token."""
    user, password = request.form.get("username", ""), request.form.get("password", "")
    if not user or not password:
        return _detail(422, "auth/token: username and password form fields are required")
    try:
        answer = requests.get(f"{_xnat_url()}/data/services/tokens/issue",
                              auth=(user, password), timeout=60)  # fmt: skip
    except requests.RequestException:
        return _detail(502, "auth/token: the XNAT server cannot be reached")
    if answer.status_code in (401, 403):
        return _detail(401, "auth/token: XNAT refused these credentials")
    if answer.status_code != 200:
        return _detail(502, f"auth/token: XNAT answered HTTP {answer.status_code}")
    token = answer.json()
    expires = int(token.get("estimatedExpirationTime") or 0) // 1000
    created = int(token.get("created") or 0) // 1000
    return jsonify({"access_token": f"{token['alias']}:{token['secret']}",
                    "token_type": "Bearer",
                    "expires_in": max(expires - created, 0) or None})  # fmt: skip


@bp.get("/auth/token/valid")
def auth_valid(project: str) -> Response:
    who = _caller(project)
    return jsonify({"username": who.user, "roles": [who.role] if who.role else []})


# ----------------------------------------------------------------------------- info, datastore


@bp.get("/info/")
def info(project: str) -> Response:
    who = _caller(project)
    who.require("Collaborator", "info", project)
    _, served = models.served(who.session, project, _allowed())
    labels: list[str] = []
    for model in served.values():
        labels += [n for n in sorted(model["labels"], key=model["labels"].get) if n not in labels]
    images = imgs.list_images(who.session, project)
    found = imgs.labels_by_image(images, imgs.list_collections(who.session, project))
    latest = training.latest(who.session, project)
    return jsonify({
        "name": f"xnat-ml {project}", "description": f"XNAT project {project} (xnat-ml)",
        "version": __version__, "labels": labels, "models": served,
        "trainers": training.trainers(who.session, project),
        "strategies": {name: {"description": text} for name, text in STRATEGIES.items()},
        "scoring": {}, "train_stats": {training.COMMAND: latest} if latest else {},
        "datastore": imgs.datastore_stats(images, found), "config": {},
    })  # fmt: skip


@bp.get("/datastore/")
def datastore(project: str) -> Response:
    who = _caller(project)
    who.require("Collaborator", "list images", project)
    output = request.args.get("output", "stats")
    if output not in ("stats", "all"):
        return _detail(422, f"output {output[:50]!r}: not one of stats, all")
    images = imgs.list_images(who.session, project)
    found = imgs.labels_by_image(images, imgs.list_collections(who.session, project))
    if output == "all":
        return jsonify(imgs.datastore_json(project, images, found))
    return jsonify(imgs.datastore_stats(images, found))


@bp.get("/datastore/image")
def datastore_image(project: str) -> Response:
    who = _caller(project)
    who.require("Collaborator", "download images", project)
    image = imgs.find_image(imgs.list_images(who.session, project), _arg("image"))
    nifti, _ = scan_image(who.session, _xnat_url(), image)
    return _file(nifti.read_bytes(), f"{_safe(image.alias)}.nii.gz", "application/gzip")


@bp.put("/datastore/label")
def datastore_label(project: str) -> Response:
    who = _caller(project)
    who.require("Member", "saving a label", project)
    image = imgs.find_image(imgs.list_images(who.session, project), _arg("image"))
    params = _params()
    upload = request.files.get("label")
    if upload is None:
        return _detail(422, "label: the multipart field 'label' (the label file) is missing")
    _, served = models.served(who.session, project, _allowed())
    names = {n: v for m in served.values() for n, v in m["labels"].items()}
    with scratch.temporary("monailabel-") as tmp:
        work = Path(tmp)
        upload.save(work / "upload")
        collection, label = save_label(who.session, _xnat_url(), project, who.user, image,
                                       work / "upload", names, work)  # fmt: skip
    return jsonify({"image": image.id, "label": label, "collection": collection,
                    "tag": imgs.FINAL, "params": params})  # fmt: skip


# ----------------------------------------------------------------------------- infer


@bp.post("/infer/<model>")
def infer(project: str, model: str) -> Response:
    who = _caller(project)
    who.require("Collaborator", "infer", project)
    output = request.args.get("output", "all")
    if output not in ("image", "json", "all", "dicom_seg"):
        return _detail(422, f"output {output[:50]!r}: not one of image, json, all, dicom_seg")
    params = _params()
    extension = str(params.get("result_extension") or ".nrrd")
    if extension not in EXTENSIONS:
        return _detail(422, f"result_extension {extension[:50]!r}: not one of "
                            f"{', '.join(EXTENSIONS)}")  # fmt: skip
    chosen = models.resolve(list_models(who.session, project), model, _allowed())
    image = imgs.find_image(imgs.list_images(who.session, project), _arg("image"))
    device = str(current_app.config.get(DEVICE) or "cpu")
    with scratch.temporary("monailabel-") as tmp:
        work = Path(tmp)
        result = infer_image(who.session, _xnat_url(), project, chosen, image, work, device)
        answer = {"label_names": result.label_names, "latencies": result.latencies,
                  "model": chosen.name, "version": chosen.number, "image": image.id}  # fmt: skip
        if output == "json":
            return jsonify(answer)
        name = f"{_safe(chosen.name)}_v{chosen.number}_{_safe(image.alias)}"
        if output == "dicom_seg":
            seg = write_ai_seg(result, chosen, work / "seg.dcm")
            return _file(seg.read_bytes(), f"{name}.dcm", "application/dicom")
        path = write_labels(result.labels, result.series, work / f"{name}{extension}",
                            str(params.get("result_dtype") or "uint8"))  # fmt: skip
        data = path.read_bytes()
    mime = "application/octet-stream" if extension == ".nrrd" else "application/gzip"
    if output == "image":
        return _file(data, path.name, mime)
    body, content_type = encode_multipart_formdata(
        {"params": json.dumps(answer), "image": (path.name, data, mime)})
    return Response(body, 200, content_type=content_type)


# ----------------------------------------------------------------------------- train


@bp.post("/train/")
@bp.post("/train/<model>")
def train_start(project: str, model: str | None = None) -> Response:
    who = _caller(project)
    who.require("Member", "training", project)
    versions = list_models(who.session, project)
    if model is None:
        if len(versions) != 1:
            return _detail(422, "train: name the model to fine-tune (POST train/{model})")
        model = next(iter(versions))
    chosen = models.resolve(versions, model, _allowed())
    return jsonify(training.start(who.session, project, chosen, _params()))


@bp.get("/train/")
def train_status(project: str) -> Response:
    who = _caller(project)
    who.require("Collaborator", "training status", project)
    latest = training.latest(who.session, project)
    if request.args.get("check_if_running", "").lower() == "true":
        running = latest is not None and latest["status"] == "RUNNING"
        return jsonify(latest) if running else _detail(404, "no training is running")
    return jsonify(latest or {})


@bp.delete("/train/")
def train_stop(project: str) -> Response:
    who = _caller(project)
    who.require("Member", "stopping training", project)
    return jsonify({"stopped": training.stop(who.session, project)})


# ----------------------------------------------------------------------------- active learning


@bp.post("/activelearning/<strategy>")
def next_image(project: str, strategy: str) -> Response:
    who = _caller(project)
    who.require("Collaborator", "active learning", project)
    if strategy not in STRATEGIES:
        return _detail(404, f"strategy {strategy[:50]!r}: not one of {', '.join(STRATEGIES)}")
    _params()  # checked, not used: the strategies take none
    images = imgs.list_images(who.session, project)
    found = imgs.labels_by_image(images, imgs.list_collections(who.session, project))
    todo = [image for image in images if imgs.FINAL not in found[image.id]]
    if not todo:
        return jsonify({})
    image = todo[0] if strategy == "first" else random.choice(todo)
    return jsonify({"id": image.id, **image.info()})


@bp.route("/<path:unknown>", methods=["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"])
def not_found(project: str, unknown: str) -> Response:
    return _detail(404, "Not Found")


# ----------------------------------------------------------------------------- helpers


def _arg(name: str) -> str:
    value = request.args.get(name, "")
    if not value:
        raise XnatMlError(f"{name}: the query parameter is required")
    return value


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)[:80]


def _file(data: bytes, name: str, mime: str) -> Response:
    response = Response(data, 200, mimetype=mime)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
