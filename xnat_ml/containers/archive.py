"""The archive as the Container Service sees it: XNAT objects as JSON, read and written over REST.

Objects come back in the Container Service's JSON shape (`id`, `label`, `xsiType`, `uri`,
`project-id`, `scans`, `assessors`, `resources`, ...; see its `model/xnat/*.java`), because that is
what matchers and `derived-from-xnat-object-property` are written against. Object URIs use its form
(`/archive/experiments/XNAT_E00001/scans/1`); `rest_path` maps them to `/data/...` requests, which
real XNAT and the embedded server both answer. Plain `requests`, one keep-alive session per job:
a launch makes a handful of calls and must not pay xnatpy's schema bootstrap each time.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import parse as parse_xml

from xnat_ml import scratch
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.archives import extract_zip, zip_directory
from xnat_ml.xnat.uris import ObjectPath, UriError, parse_path, path_in_resource

log = logging.getLogger(__name__)

def rest_path(uri: str) -> str:
    """`/archive/x` or `/x` → `/data/x` (what XNAT's REST API answers)."""
    uri = "/" + uri.lstrip("/")
    if uri.startswith("/data/"):
        return uri
    if uri.startswith("/archive/"):
        return "/data/" + uri[len("/archive/") :]
    return "/data" + uri


def _object_ids(path: ObjectPath) -> dict[str, str]:
    """The ids a parsed URI names, by role: project, subject, experiment, child (scans or
    assessors) and child_id, resource, file."""
    roles = {"projects": "project", "subjects": "subject", "experiments": "experiment"}
    ids = {}
    for collection, name in path.steps:
        if collection in roles:
            ids[roles[collection]] = name
        else:
            ids["child"], ids["child_id"] = collection, name
    ids.update((k, v) for k, v in (("resource", path.resource), ("file", path.file)) if v)
    return ids


def _q(value: str) -> str:
    return quote(str(value), safe="")


class ArchiveClient:
    """REST calls a job needs, as one user (normally through an alias token)."""

    def __init__(
        self,
        host: str,
        user: str,
        password: str,
        timeout: float = 120,
        renew: Callable[[], tuple[str, str]] | None = None,
    ) -> None:
        """`renew` gives fresh credentials (a new alias token) when the server answers 401:
        tokens expire, and a long job must still upload its results."""
        self.host = host.rstrip("/")
        self.http = requests.Session()
        self.http.auth = (user, password)
        self.timeout = timeout
        self.renew = renew

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ plumbing

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any):
        url = self.host + path
        for attempt in (1, 2):
            try:
                response = self.http.request(method, url, timeout=self.timeout, **kw)
            except requests.RequestException as exc:
                raise XnatMlError(
                    f"XNAT {path}: {type(exc).__name__} talking to {self.host}"
                ) from exc
            if response.status_code != 401 or self.renew is None or attempt == 2:
                break
            if hasattr(kw.get("data"), "seek"):
                kw["data"].seek(0)
            self.http.auth = self.renew()
        if response.status_code not in ok:
            first = (response.text.strip().splitlines() or [""])[0][:200]
            raise XnatMlError(f"XNAT {path}: {method} answered {response.status_code} {first}")
        return response

    def json(self, path: str, **params: Any) -> Any:
        response = self.request("GET", path, params={"format": "json", **params})
        try:
            return response.json()
        except ValueError as exc:
            raise XnatMlError(f"XNAT {path}: answer is not JSON") from exc

    def rows(self, path: str, **params: Any) -> list[dict]:
        data = self.json(path, **params)
        try:
            return list(data["ResultSet"]["Result"])
        except (KeyError, TypeError) as exc:
            raise XnatMlError(f"XNAT {path}: answer is not a ResultSet listing") from exc

    def item(self, path: str) -> tuple[dict, str]:
        """(data_fields, xsi type) of one object from its `?format=json` document."""
        data = self.json(path)
        try:
            item = data["items"][0]
            fields = dict(item.get("data_fields") or {})
            xsi = (item.get("meta") or {}).get("xsi:type") or fields.get("xsiType", "")
        except (KeyError, IndexError, TypeError) as exc:
            raise XnatMlError(f"XNAT {path}: answer is not an XNAT object document") from exc
        return fields, xsi

    def issue_token(self) -> tuple[str, str]:
        """A fresh alias token (alias, secret) for the user this client acts as."""
        data = self.request("GET", "/data/services/tokens/issue").json()
        try:
            return data["alias"], data["secret"]
        except (KeyError, TypeError) as exc:
            raise XnatMlError(
                "XNAT /data/services/tokens/issue: no alias/secret in answer"
            ) from exc

    # ------------------------------------------------------------------ objects

    def load(self, kind: str, uri: str, children: bool = True) -> dict:
        """The object of `kind` (Project, Subject, Session, Scan, Assessor, ...) at `uri`."""
        try:
            path = parse_path(uri.strip())
        except UriError as exc:
            raise XnatMlError(f"{kind} {uri!r}: not an XNAT object URI ({exc.problem})") from None
        if kind == "Resource":
            return self._resource(path, children)
        loader = {
            "Project": self._project,
            "Subject": self._subject,
            "Session": self._session,
            "SubjectAssessor": self._session,
            "ProjectAsset": self._session,  # an experiment too, attached to the project
            "Scan": self._scan,
            "Assessor": self._assessor,
        }.get(kind)
        if loader is None:
            raise XnatMlError(f"{kind} {uri!r}: cannot load objects of this type")
        return loader(_object_ids(path), children)

    def _project(self, ids: dict, children: bool) -> dict:
        pid = ids["project"]
        fields, _ = self.item(f"/data/projects/{_q(pid)}")
        project = fields.get("ID", pid)
        return self._object(
            children, project, project, "xnat:projectData", f"/archive/projects/{project}",
            {"name": fields.get("name", "")},
        )  # fmt: skip

    def _subject(self, ids: dict, children: bool) -> dict:
        path = (
            f"/data/projects/{_q(ids['project'])}/subjects/{_q(ids['subject'])}"
            if "project" in ids
            else f"/data/subjects/{_q(ids['subject'])}"
        )
        fields, _ = self.item(path)
        sid = fields.get("ID", ids["subject"])
        return self._object(
            children, sid, fields.get("label", sid), "xnat:subjectData", f"/archive/subjects/{sid}",
            {"project-id": fields.get("project", ids.get("project"))},
        )  # fmt: skip

    def _experiment_path(self, ids: dict) -> str:
        if "project" in ids and "experiment" in ids:
            subject = f"/subjects/{_q(ids['subject'])}" if "subject" in ids else ""
            return (
                f"/data/projects/{_q(ids['project'])}{subject}/experiments/{_q(ids['experiment'])}"
            )
        if "experiment" not in ids:
            raise XnatMlError(f"URI with {ids}: names no session")
        return f"/data/experiments/{_q(ids['experiment'])}"

    def _session(self, ids: dict, children: bool) -> dict:
        fields, xsi = self.item(self._experiment_path(ids))
        eid = fields.get("ID", ids["experiment"])
        uri = f"/archive/experiments/{eid}"
        obj = self._object(children, eid, fields.get("label", eid), xsi, uri, {
            "project-id": fields.get("project"),
            "subject-id": fields.get("subject_ID"),
            "modality": fields.get("modality"),
            "date": fields.get("date"),
        })  # fmt: skip
        if children:
            obj["scans"] = [
                self._scan({"experiment": eid, "child_id": row["ID"]}, True)
                for row in self.rows(f"/data/experiments/{_q(eid)}/scans")
            ]
            obj["assessors"] = [
                self._assessor({"experiment": eid, "child_id": row["ID"]}, True)
                for row in self.rows(f"/data/experiments/{_q(eid)}/assessors")
            ]
        return obj

    def _scan(self, ids: dict, children: bool) -> dict:
        eid = ids["experiment"]
        if "project" in ids:  # a label-addressed session: find its accession id
            eid = self.item(self._experiment_path(ids))[0].get("ID", eid)
        fields, xsi = self.item(f"/data/experiments/{_q(eid)}/scans/{_q(ids['child_id'])}")
        scan_id = str(fields.get("ID", ids["child_id"]))
        uri = f"/archive/experiments/{eid}/scans/{scan_id}"
        return self._object(children, scan_id, scan_id, xsi, uri, {
            "integer-id": int(scan_id) if scan_id.isdigit() else None,
            "scan-type": fields.get("type"),
            "series-description": fields.get("series_description"),
            "uid": fields.get("UID"),
            "quality": fields.get("quality"),
            "modality": fields.get("modality"),
            "frames": fields.get("frames"),
            "note": fields.get("note"),
            "session-id": eid,
            "project-id": fields.get("project"),
        })  # fmt: skip

    def _assessor(self, ids: dict, children: bool) -> dict:
        eid = ids["experiment"]
        fields, xsi = self.item(f"/data/experiments/{_q(eid)}/assessors/{_q(ids['child_id'])}")
        aid = fields.get("ID", ids["child_id"])
        uri = f"/archive/experiments/{eid}/assessors/{aid}"
        return self._object(children, aid, fields.get("label", aid), xsi, uri, {
            "project-id": fields.get("project"),
            "session-id": eid,
            "name": fields.get("name"),
        })  # fmt: skip

    def _object(
        self, children: bool, oid: str, label: str, xsi_type: str, uri: str, properties: dict
    ) -> dict:
        """An object as the Container Service's model has it, with its resources if `children`
        (a session adds its scans and assessors)."""
        obj = {"id": oid, "label": label, "xsiType": xsi_type, "uri": uri, "directory": None,
               **properties}  # fmt: skip
        if children:
            obj["resources"] = self.resources(uri)
        return obj

    def _resource(self, path: ObjectPath, children: bool) -> dict:
        label = path.resource
        if label is None:
            raise XnatMlError(f"{path.uri('/archive')}: names no resource")
        parent_uri = path.owner().uri("/archive")
        for res in self.resources(parent_uri):
            if res["label"] == label or res["id"] == label:
                if children:
                    res["files"] = self.files(res["uri"])
                return res
        raise XnatMlError(f"XNAT resource {label!r} of {parent_uri}: not found")

    def resources(self, parent_uri: str) -> list[dict]:
        out = []
        for row in self.rows(rest_path(parent_uri) + "/resources"):
            label = row.get("label", "")
            rid = str(row.get("xnat_abstractresource_id", ""))
            out.append(
                {
                    "id": rid,
                    "label": label,
                    "xsiType": row.get("element_name") or "xnat:resourceCatalog",
                    "uri": f"{parent_uri}/resources/{label}",
                    "directory": None,
                    "integer-id": int(rid) if rid.isdigit() else None,
                    "format": row.get("format"),
                    "content": row.get("content"),
                    "parent-uri": parent_uri,
                    "file-count": row.get("file_count"),
                }
            )
        return out

    def files(self, resource_uri: str) -> list[dict]:
        out = []
        for row in self.rows(rest_path(resource_uri) + "/files"):
            name = row.get("Name", "")
            path = row.get("path") or name
            out.append(
                {
                    "name": name.rsplit("/", 1)[-1],
                    "path": path,
                    "uri": f"{resource_uri}/files/{path}",
                    "size": row.get("Size"),
                    "format": row.get("file_format"),
                    "content": row.get("file_content"),
                    "tags": [t for t in (row.get("file_tags") or "").split(",") if t],
                    "checksum": row.get("digest"),
                }
            )
        return out

    def subjects(self, project_id: str) -> list[dict]:
        return [
            self._subject({"subject": row["ID"]}, True)
            for row in self.rows(f"/data/projects/{_q(project_id)}/subjects")
        ]

    def sessions(self, project_id: str, subject_id: str | None = None) -> list[dict]:
        params = {"project": project_id}
        rows = self.rows("/data/experiments", **params, columns="ID,subject_ID,xsiType")
        return [
            self._session({"experiment": row["ID"]}, True)
            for row in rows
            if subject_id is None or row.get("subject_ID") == subject_id
        ]

    # ------------------------------------------------------------------ transfer

    def download_resource(self, resource_uri: str, dest: Path) -> list[Path]:
        """All files of a resource into `dest` (zip streamed to disk, extracted safely)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, suffix=".zip") as tmp:
            response = self.request(
                "GET", rest_path(resource_uri) + "/files", params={"format": "zip"}, stream=True
            )
            with response:
                for chunk in response.iter_content(1 << 20):
                    tmp.write(chunk)
            tmp.flush()
            return extract_zip(Path(tmp.name), dest, rename=path_in_resource)

    def download_file(self, file_uri: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        response = self.request("GET", rest_path(file_uri), stream=True)
        part = dest.with_name(f".{dest.name}.part")
        with response, open(part, "wb") as out:
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)
        part.rename(dest)
        return dest

    def resource_exists(self, parent_uri: str, label: str) -> bool:
        return any(r["label"] == label for r in self.resources(parent_uri))

    def upload_resource(
        self,
        parent_uri: str,
        label: str,
        src_dir: Path,
        format: str | None = None,
        content: str | None = None,
        tags: list[str] | None = None,
    ) -> str:
        """Upload every file under `src_dir` as resource `label` of `parent_uri` in one zip PUT.

        The server extracts the zip in one step, so readers never see part of the files.
        """
        uri = f"{parent_uri}/resources/{label}"
        path = rest_path(parent_uri) + f"/resources/{_q(label)}"
        meta = {k: v for k, v in (("format", format), ("content", content)) if v}
        if tags:
            meta["tags"] = ",".join(tags)
        self.request("PUT", path, ok=(200, 201, 409), params=meta)
        with scratch.temporary("outputs-") as tmp:
            zip_path = Path(tmp) / "upload.zip"
            zip_directory(src_dir, zip_path)
            with open(zip_path, "rb") as body:
                self.request(
                    "PUT",
                    f"{path}/files/{_q(label)}.zip",
                    ok=(200, 201),
                    params={"extract": "true", "overwrite": "true", **meta},
                    data=body,
                    headers={"Content-Type": "application/octet-stream"},
                )
        return uri

    def upload_xml(self, parent_uri: str, kind: str, xml_file: Path) -> str:
        """Create an assessor or scan from an XML document (output handler type Assessor/Scan)."""
        try:  # a container's output is outside data: no DTD, so no entity tricks
            root = parse_xml(xml_file, forbid_dtd=True).getroot()
        except (ParseError, DefusedXmlException) as exc:
            raise XnatMlError(
                f"output {xml_file.name}: not an acceptable XML document ({exc})"
            ) from exc
        label = root.get("label") or root.get("ID")
        if not label:
            raise XnatMlError(f"output {xml_file.name}: the XML has no label or ID attribute")
        child = "assessors" if kind == "Assessor" else "scans"
        path = rest_path(parent_uri) + f"/{child}/{_q(label)}"
        self.request(
            "PUT",
            path,
            ok=(200, 201),
            params={"inbody": "true"},
            data=xml_file.read_bytes(),
            headers={"Content-Type": "text/xml"},
        )
        return f"{parent_uri}/{child}/{label}"

    def delete(self, uri: str) -> None:
        self.request("DELETE", rest_path(uri), ok=(200, 204, 404), params={"removeFiles": "true"})
