"""The archive hierarchy over REST: projects, subjects, experiments, scans, assessors.

Every object is reachable by XNAT's URL forms (`/data/projects/P/subjects/S/experiments/E/scans/1`,
`/data/experiments/E/...`, `/data/subjects/S`, each also under `/data/archive/...`). The
`xnat` URL converter and `archive_route` (routing.py) match such an object path and
store/objects.py's `resolve_object` maps it to the ORM object, checking the caller's project
role on the way; other blueprints (resources, files, ROI) use the same two pieces.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from werkzeug.exceptions import BadRequest, Conflict, NotFound

from xnat_ml.server import auth
from xnat_ml.server.faults import fault_point
from xnat_ml.server.formats import datatypes
from xnat_ml.server.formats.listing import result_set
from xnat_ml.server.formats.validation import (
    SCAN_ID_RE,
    check_label,
    check_type,
    query_fields,
    take,
    typed_fields,
)
from xnat_ml.server.formats.xml_documents import MAX_XML_BYTES, XmlObject, read_object_xml
from xnat_ml.server.formats.xml_writer import render
from xnat_ml.server.routing import archive_route, frees_disk_space
from xnat_ml.server.store import serializers, shares
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.models import (
    ArchiveObject,
    Assessor,
    Experiment,
    Project,
    ProjectRole,
    Reconstruction,
    Scan,
    Subject,
    User,
)
from xnat_ml.server.store.objects import (
    describe_missing,
    lookup,
    new_accession,
    resolve_object,
    split_path,
    walk,
)
from xnat_ml.server.store.signals import retire_project, run_after_commit
from xnat_ml.server.store.trash import Hidden

bp = Blueprint("archive", __name__)

# What a new object's fields are typed by until its xsiType is known (types are inherited).
_BASE_TYPE_OF = {
    "projects": "xnat:projectData",
    "subjects": "xnat:subjectData",
    "experiments": "xnat:subjectAssessorData",
    "scans": "xnat:imageScanData",
    "assessors": "xnat:imageAssessorData",
    "reconstructions": "xnat:reconstructedImageData",
}

# ----------------------------------------------------------------------------- listings


def _experiment_filters(args: Mapping[str, str]) -> list:
    clauses = []
    if xsi := args.get("xsiType"):
        base = datatypes.canonical(xsi)
        if base is None:
            raise BadRequest(f"xsiType {xsi!r} is not a datatype this server knows.")
        clauses.append(Experiment.xsi_type.in_(datatypes.subtypes(base)))
    return clauses


def _list_experiments(parent: ArchiveObject | None, args: Mapping[str, str]) -> Response:
    """Sessions (or, with an assessor xsiType, image assessors, which XNAT lists as
    experiments too). Scan columns (`xnat:mrScanData/type`) give one row per scan, as XNAT's
    search joins them: a whole project's scans in one call."""
    user = auth.require_login()
    xsi = args.get("xsiType")
    if xsi and datatypes.is_a(xsi, "xnat:imageAssessorData"):
        return _list_assessors(parent, user, args)
    statement = serializers.experiment_query().where(*_experiment_filters(args))
    statement = statement.where(*_scope(Experiment, parent, user, args))
    rows = serializers.experiment_rows(get_db(), statement)
    aliases = serializers.ALIASES["experiment"]
    if serializers.asks_for_scans(args.get("columns", "")):
        rows = serializers.with_scan_rows(get_db(), rows)
        aliases = {**aliases, **serializers.SCAN_JOIN_ALIASES}
    return result_set(rows, args, serializers.DEFAULT_COLUMNS["experiment"], aliases)


def _scope(model, parent: ArchiveObject | None, user: User, args: Mapping[str, str]) -> list:
    """WHERE clauses limiting an experiment or assessor listing to what the path names and
    the caller may read."""
    shared = model is Experiment  # sessions shared into a project are listed there too
    if parent is None:
        if project_id := args.get("project"):
            project = walk([("projects", project_id)], "read")
            return [shares.in_projects(model, [project.pk]) if shared else
                    model.project_pk == project.pk]  # fmt: skip
        if (readable := auth.readable_project_pks(user)) is not None:
            return [shares.in_projects(model, readable) if shared else
                    model.project_pk.in_(readable)]  # fmt: skip
        return []
    if isinstance(parent, Project):
        return [shares.in_projects(model, [parent.pk]) if shared else
                model.project_pk == parent.pk]  # fmt: skip
    if model is Assessor:
        return [Assessor.experiment_pk.in_(select(Experiment.pk).where(
            Experiment.subject_pk == parent.pk))]  # fmt: skip
    return [Experiment.subject_pk == parent.pk]


def _list_assessors(parent: ArchiveObject | None, user: User, args: Mapping[str, str]):
    base = datatypes.canonical(args["xsiType"]) or args["xsiType"]
    statement = (
        select(Assessor)
        .where(Assessor.xsi_type.in_(datatypes.subtypes(base)))
        .where(*_scope(Assessor, parent, user, args))
        .options(selectinload(Assessor.experiment).selectinload(Experiment.project))
        .order_by(Assessor.pk)
    )
    rows = serializers.rows_of(get_db().scalars(statement))
    return result_set(
        rows, args, serializers.DEFAULT_COLUMNS["assessor"], serializers.ALIASES["assessor"]
    )


def _readable(model, user: User, args: Mapping[str, str]):
    statement = select(model).order_by(model.pk)
    if project_id := args.get("project"):
        project = walk([("projects", project_id)], "read")
        return statement.where(shares.in_projects(model, [project.pk]))
    readable = auth.readable_project_pks(user)
    if readable is not None:
        statement = statement.where(shares.in_projects(model, readable))
    return statement


@archive_route(bp, "/projects", methods=["GET"])
def list_projects() -> Response:
    user = auth.require_login()
    statement = select(Project).order_by(Project.pk)
    readable = auth.readable_project_pks(user)
    if readable is not None:
        statement = statement.where(Project.pk.in_(readable))
    rows = serializers.rows_of(get_db().scalars(statement))
    return result_set(
        rows, request.args, serializers.DEFAULT_COLUMNS["project"], serializers.ALIASES["project"]
    )


@archive_route(bp, "/subjects", methods=["GET"])
def list_all_subjects() -> Response:
    user = auth.require_login()
    rows = serializers.rows_of(get_db().scalars(_readable(Subject, user, request.args)))
    return result_set(
        rows, request.args, serializers.DEFAULT_COLUMNS["subject"], serializers.ALIASES["subject"]
    )


@archive_route(bp, "/experiments", methods=["GET"])
def list_all_experiments() -> Response:
    return _list_experiments(None, request.args)


@archive_route(
    bp,
    "/<xnat:parent>/<any(subjects, experiments, scans, assessors, reconstructions):collection>",
    methods=["GET"],
)
def list_children(parent: str, collection: str) -> Response:
    owner = resolve_object(parent, "read")
    args = request.args
    if collection == "experiments" and isinstance(owner, Project | Subject):
        return _list_experiments(owner, args)
    if collection == "subjects" and isinstance(owner, Project):
        shared = get_db().scalars(select(Subject).where(shares.in_projects(Subject, [owner.pk])))
        objects = sorted(shared, key=lambda s: s.pk)
    elif collection == "scans" and isinstance(owner, Experiment):
        objects = sorted(owner.scans, key=lambda s: s.pk)
        if xsi := args.get("xsiType"):
            objects = [s for s in objects if datatypes.is_a(s.xsi_type, xsi)]
    elif collection == "reconstructions" and isinstance(owner, Experiment):
        objects = sorted(owner.reconstructions, key=lambda r: r.pk)
    elif collection == "assessors" and isinstance(owner, Experiment):
        objects = sorted(owner.assessors, key=lambda a: a.pk)
        if xsi := args.get("xsiType"):
            objects = [a for a in objects if datatypes.is_a(a.xsi_type, xsi)]
    else:
        raise NotFound(f"A {owner.kind} has no {collection}.")
    kind = collection.removesuffix("s")
    rows = serializers.rows_of(objects)
    if collection == "subjects":  # a shared subject shows the label it has in this project
        labels = shares.labels_in(get_db(), owner, Subject)
        for obj, row in zip(objects, rows, strict=True):
            row["label"] = labels.get(obj.pk, row["label"])
    return result_set(
        rows,
        args,
        serializers.DEFAULT_COLUMNS[kind],
        serializers.ALIASES[kind],
    )


# ----------------------------------------------------------------------------- single objects


@archive_route(bp, "/<xnat:path>", methods=["GET"])
def get_object(path: str) -> Response:
    obj = resolve_object(path, "read")
    wanted = (request.args.get("format") or "json").lower()
    if wanted == "xml":
        return Response(render(serializers.xml_doc(obj)), mimetype="text/xml")
    if wanted not in ("json", "html"):
        raise BadRequest("Single objects come as format=json or format=xml.")
    return jsonify(serializers.item(obj))


@archive_route(bp, "/<xnat:path>", methods=["PUT"])
def put_object(path: str) -> Response:
    """Create the object named by the path (fields from the query string and any XML document
    sent), or update it."""
    auth.require_login()
    pairs = split_path(path)
    *parent_pairs, (collection, name) = pairs
    fields = query_fields(request.args)
    xsi_type = request.args.get("xsiType")
    document = _document_sent()
    if document is not None:
        xsi_type = xsi_type or document.xsi_type
        named = dict(document.fields)
        take(named, "project", "label")  # the path names the project and the object
        fields = {**named, **fields}
    parent = _parent(parent_pairs, collection, document)
    given_id = take(fields, "ID")  # server-assigned, except a scan's (xnatpy PUTs scans/{type})
    if collection == "scans" and given_id:
        name = given_id
    existing = lookup(parent, collection, name)
    if existing is not None and parent is not None:
        if existing.project_obj is not parent.project_obj:  # shared in: read-only here
            auth.require_project_role(existing.project_obj, "edit")
    if parent is None and collection != "projects":
        if existing is None:
            raise NotFound(describe_missing(None, collection, name))
        auth.require_project_role(existing.project_obj, "edit")
    typed_as = existing.xsi_type if existing is not None else (
        datatypes.canonical(xsi_type or "") or _BASE_TYPE_OF[collection]
    )
    fields = typed_fields(typed_as, fields)
    db = get_db()
    if existing is not None:
        if isinstance(existing, Project):
            auth.require_project_role(existing, "own")
        _update(existing, fields, xsi_type)
        _put_scans(existing, document)
        db.commit()
        return Response(existing.id, 200, mimetype="text/plain")
    creators = {
        "projects": _create_project,
        "subjects": _create_subject,
        "experiments": _create_experiment,
        "scans": _create_scan,
        "assessors": _create_assessor,
        "reconstructions": _create_reconstruction,
    }
    obj = creators[collection](parent, name, fields, xsi_type)
    db.flush()
    _put_scans(obj, document)
    db.commit()
    return Response(obj.id, 201, mimetype="text/plain")


@archive_route(bp, "/<xnat:path>", methods=["DELETE"])
@frees_disk_space
def delete_object(path: str) -> Response:
    """Delete the object, everything below it, and its files; a project also takes everything
    other services keep on it (jobs, subscriptions, ...: see signals.project_deleting)."""
    obj = resolve_object(path, "own")  # Members create and edit, never delete (as in XNAT)
    folders = [obj.relative_dir]
    if isinstance(obj, Subject):  # sessions live beside subjects, not inside them
        folders += [experiment.relative_dir for experiment in obj.experiments]
    hidden = Hidden(current_app.config["DATA_DIR"], folders)  # crash-safe: see store/trash.py
    fault_point("delete.hidden")
    db = get_db()
    try:
        after = retire_project(obj, db) if isinstance(obj, Project) else []
        db.delete(obj)
        db.commit()
    except Exception:
        db.rollback()
        hidden.put_back()
        raise
    fault_point("delete.committed")
    hidden.discard()
    run_after_commit(after)
    return Response("", 200)


# ----------------------------------------------------------------------------- create / update


def _document_sent() -> XmlObject | None:
    """The XML document a PUT carries: with `inbody=true`, as a multipart file (pyxnat's
    `create(xml=...)`), or as a non-empty text/xml body; None when it carries none."""
    if request.mimetype == "multipart/form-data":
        upload = next(iter(request.files.values()), None)
        if upload is None:
            raise BadRequest("XML document: the multipart body holds no file.")
        return read_object_xml(upload.stream.read(MAX_XML_BYTES + 1))
    as_xml = request.mimetype in ("text/xml", "application/xml") and request.content_length
    if as_xml or request.args.get("inbody", "").lower() == "true":
        return read_object_xml(request.stream.read(MAX_XML_BYTES + 1))
    return None


def _parent(parent_pairs: list, collection: str, document: XmlObject | None):
    """The object the path puts the new one under; a session document PUT under a subject
    that does not exist yet creates the subject first, as XNAT does."""
    if not parent_pairs:
        return None
    try:
        return walk(parent_pairs, "edit")
    except NotFound:
        if document is None or collection != "experiments" or parent_pairs[-1][0] != "subjects":
            raise
        project = walk(parent_pairs[:-1], "edit")
        subject = _create_subject(project, parent_pairs[-1][1], {}, None)
        get_db().flush()
        return subject


def _put_scans(session: ArchiveObject, document: XmlObject | None) -> None:
    """Create or update the scans a session document lists (`<xnat:scans>`)."""
    for scan in document.children.get("scans", []) if document else []:
        if not isinstance(session, Experiment):
            raise BadRequest(f"XML document: a {session.kind} has no scans.")
        fields = dict(scan.fields)
        scan_id = take(fields, "ID") or ""
        take(fields, "project")
        take(fields, "image_session_ID")
        existing = lookup(session, "scans", scan_id)
        fields = typed_fields(existing.xsi_type if existing else scan.xsi_type, fields)
        if existing is not None:
            _update(existing, fields, scan.xsi_type or None)
        else:
            _create_scan(session, scan_id, fields, scan.xsi_type or None)


def _unique_label(model, project: Project, label: str, kind: str) -> None:
    holder = get_db().scalar(
        select(model).where(model.project_pk == project.pk, model.label == label)
    )
    if holder is not None:
        raise Conflict(
            f"{kind} label '{label}' is already used in project '{project.id}' (by {holder.id})."
        )


def _create_project(_parent, name: str, fields: dict, xsi_type: str | None) -> Project:
    user = auth.require_login()
    auth.refuse_job("create projects")
    check_type(xsi_type, "xnat:projectData", "Project")
    project_id = check_label("Project", name)
    if get_db().scalar(select(Project).where(func.lower(Project.id) == project_id.lower())):
        raise Conflict(f"Project ID '{project_id}' is already taken (IDs ignore case).")
    project = Project(
        id=project_id, insert_user=user.username, name=project_id, secondary_id=project_id
    )
    _apply_project_fields(project, fields)
    db = get_db()
    db.add(project)
    db.flush()
    db.add(ProjectRole(user_pk=user.pk, project_pk=project.pk, role="Owner"))
    return project


def _apply_project_fields(project: Project, fields: dict) -> None:
    columns = {
        "secondary_id": "secondary_id",
        "name": "name",
        "description": "description",
        "keywords": "keywords",
        "pi_firstname": "pi_firstname",
        "pi_lastname": "pi_lastname",
        "accessibility": "accessibility",
    }
    for key, value in fields.items():
        attr = columns.get(key.lower())
        if attr == "accessibility" and value not in ("private", "protected", "public"):
            raise BadRequest(
                f"Project accessibility {value!r} must be private, protected or public."
            )
        if attr is not None:
            setattr(project, attr, value)


def _create_subject(parent, name: str, fields: dict, xsi_type: str | None) -> Subject:
    if not isinstance(parent, Project):
        raise NotFound("Subjects are created under /data/projects/{project}/subjects/{label}.")
    check_type(xsi_type, "xnat:subjectData", "Subject")
    label = check_label("Subject", take(fields, "label") or name)
    _unique_label(Subject, parent, label, "Subject")
    subject = Subject(
        id=new_accession("S"),
        project=parent,
        label=label,
        fields=fields,
        insert_user=auth.require_login().username,
    )
    get_db().add(subject)
    return subject


def _create_experiment(parent, name: str, fields: dict, xsi_type: str | None) -> Experiment:
    if isinstance(parent, Project):
        subject_ref = take(fields, "subject_ID", "subject_label", "subject")
        if not subject_ref:
            raise BadRequest(
                "A new experiment needs its subject: PUT it under "
                ".../subjects/{subject}/experiments/{label} or pass subject_ID."
            )
        subject = lookup(parent, "subjects", subject_ref)
        if subject is None:
            raise NotFound(describe_missing(parent, "subjects", subject_ref))
        if subject.project is not parent:  # shared in: the session goes to its own project
            auth.require_project_role(subject.project, "edit")
    elif isinstance(parent, Subject):
        subject = parent
        take(fields, "subject_ID", "subject_label", "subject")  # the path names the subject
    else:
        raise NotFound("Experiments are created under /data/projects/{p}/subjects/{s}/experiments.")
    xsi = check_type(xsi_type, "xnat:subjectAssessorData", "Experiment")
    if xsi is None:
        raise BadRequest("A new experiment needs xsiType, e.g. xsiType=xnat:mrSessionData.")
    label = check_label("Experiment", take(fields, "label") or name)
    _unique_label(Experiment, subject.project, label, "Experiment")
    experiment = Experiment(
        id=new_accession("E"),
        project=subject.project,
        subject=subject,
        label=label,
        xsi_type=xsi,
        insert_user=auth.require_login().username,
        fields={},
    )
    _apply_experiment_fields(experiment, fields)
    if not experiment.modality:
        modalities = {v: k for k, v in datatypes.SESSION_TYPE_BY_MODALITY.items()}
        experiment.modality = modalities.get(xsi, "")
    get_db().add(experiment)
    return experiment


def _apply_experiment_fields(experiment: Experiment | Assessor, fields: dict) -> None:
    if (date := take(fields, "date")) is not None:
        experiment.date = date  # checked by typed_fields
    if isinstance(experiment, Experiment):
        if (time := take(fields, "time")) is not None:
            experiment.time = time
        if (modality := take(fields, "modality")) is not None:
            experiment.modality = modality
    experiment.fields.update(fields)


def _create_scan(parent, name: str, fields: dict, xsi_type: str | None) -> Scan:
    if not isinstance(parent, Experiment):
        raise NotFound("Scans are created under .../experiments/{session}/scans/{id}.")
    xsi = check_type(xsi_type, "xnat:imageScanData", "Scan") or datatypes.scan_type_for(
        parent.modality
    )
    scan_id = check_label("Scan", name, SCAN_ID_RE)
    scan = Scan(experiment=parent, id=scan_id, xsi_type=xsi, fields={})
    _apply_scan_fields(scan, fields)
    get_db().add(scan)
    return scan


def _apply_scan_fields(scan: Scan, fields: dict) -> None:
    for attr, names in (
        ("type", ("type",)),
        ("series_description", ("series_description", "seriesDescription")),
        ("uid", ("UID",)),
        ("quality", ("quality",)),
    ):
        if (value := take(fields, *names)) is not None:
            setattr(scan, attr, value)
    scan.fields.update(fields)


def _create_assessor(parent, name: str, fields: dict, xsi_type: str | None) -> Assessor:
    if not isinstance(parent, Experiment):
        raise NotFound("Assessors are created under .../experiments/{session}/assessors/{label}.")
    xsi = check_type(xsi_type, "xnat:imageAssessorData", "Assessor")
    if xsi is None:
        raise BadRequest("A new assessor needs xsiType, e.g. xsiType=icr:roiCollectionData.")
    label = check_label("Assessor", take(fields, "label") or name)
    _unique_label(Assessor, parent.project, label, "Assessor")
    assessor = Assessor(
        id=new_accession("E"),
        experiment=parent,
        project_pk=parent.project_pk,
        label=label,
        xsi_type=xsi,
        insert_user=auth.require_login().username,
        fields={},
    )
    _apply_experiment_fields(assessor, fields)
    get_db().add(assessor)
    return assessor


def _create_reconstruction(parent, name: str, fields: dict, xsi_type: str | None):
    if not isinstance(parent, Experiment):
        raise NotFound(
            "Reconstructions are created under .../experiments/{session}/reconstructions/{id}."
        )
    check_type(xsi_type, "xnat:reconstructedImageData", "Reconstruction")
    reconstruction = Reconstruction(
        experiment=parent, id=check_label("Reconstruction", name, SCAN_ID_RE), fields={}
    )
    _apply_reconstruction_fields(reconstruction, fields)
    get_db().add(reconstruction)
    return reconstruction


def _apply_reconstruction_fields(reconstruction: Reconstruction, fields: dict) -> None:
    if (kind := take(fields, "type")) is not None:
        reconstruction.type = kind
    if (base := take(fields, "baseScanType", "base_scan_type")) is not None:
        reconstruction.base_scan_type = base
    reconstruction.fields.update(fields)


def _update(obj: ArchiveObject, fields: dict, xsi_type: str | None) -> None:
    if xsi_type and datatypes.canonical(xsi_type) != obj.xsi_type:
        raise Conflict(
            f"{obj.kind.title()} '{obj.label}' is a {obj.xsi_type}; "
            f"its xsiType cannot change to {xsi_type!r}."
        )
    if isinstance(obj, Project):
        _apply_project_fields(obj, fields)
        return
    if isinstance(obj, Scan):
        _apply_scan_fields(obj, fields)
        return
    if isinstance(obj, Reconstruction):
        _apply_reconstruction_fields(obj, fields)
        return
    new_label = take(fields, "label")
    if new_label and new_label != obj.label:
        check_label(obj.kind.title(), new_label)
        _unique_label(type(obj), obj.project_obj, new_label, obj.kind.title())
        obj.label = new_label
    if isinstance(obj, Subject):
        obj.fields.update(fields)
        return
    subject_ref = take(fields, "subject_ID", "subject_label", "subject")
    if isinstance(obj, Experiment) and subject_ref not in (None, obj.subject.id, obj.subject.label):
        raise Conflict(
            f"Experiment '{obj.label}' belongs to subject '{obj.subject.label}'; "
            "moving it to another subject is not supported."
        )
    _apply_experiment_fields(obj, fields)


@archive_route(bp, "/projects/<project_id>/accessibility", methods=["GET"])
def get_accessibility(project_id: str) -> Response:
    project = resolve_object(f"projects/{project_id}", "read")
    return Response(project.accessibility, mimetype="text/plain")


@archive_route(bp, "/projects/<project_id>/accessibility/<level>", methods=["PUT"])
def set_accessibility(project_id: str, level: str) -> Response:
    project = resolve_object(f"projects/{project_id}", "own")
    _apply_project_fields(project, {"accessibility": level})
    get_db().commit()
    return jsonify({"accessibility": level})
