"""The Container Service of `xnat-ml serve`, end to end on the local backend.

Commands are installed over /xapi/commands, launched over the launch API like XNAT's UI does, and
their results read back over REST: NIfTI and label maps appear, failures upload nothing and keep
their logs, 50 launches at once all finish, bad launches are refused with the right status.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from shared_data import XNAT_COMMANDS, require

from xnat_ml.containers.backends.local import DEFAULT_MIN_SLOTS
from xnat_ml.sample.project import build_sample_project
from xnat_ml.xnat import connect

REPO = Path(__file__).resolve().parents[2]
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")


def _command(name: str, command_line: str, outputs: list[dict], handlers: list[dict],
             inputs: list[dict] | None = None) -> dict:  # fmt: skip
    """A small test command on sessions, writing into /output."""
    return {
        "name": name, "version": "1", "schema-version": "1.0", "type": "docker",
        "image": "xnat-ml/xnat-ml:0.1.0", "command-line": command_line,
        "mounts": [{"name": "out", "writable": True, "path": "/output"},
                   {"name": "out2", "writable": True, "path": "/output2"}],
        "inputs": inputs or [], "outputs": outputs,
        "xnat": [{
            "name": f"{name}-session", "contexts": ["xnat:imageSessionData"],
            "external-inputs": [{"name": "session", "type": "Session", "required": True}],
            "derived-inputs": [], "output-handlers": handlers,
        }],
    }  # fmt: skip


def _handler(name: str, output: str, label: str) -> dict:
    return {"name": name, "accepts-command-output": output, "as-a-child-of": "session",
            "label": label}  # fmt: skip


def _nifti(site: Site, uri: str):
    import nibabel

    answer = site.http.get(f"{site.url}{uri}")
    answer.raise_for_status()
    return nibabel.Nifti1Image.from_bytes(gzip.decompress(answer.content))


class Site:
    """The server, a sample project, and helpers to install and launch."""

    def __init__(self, server, project: str, session_id: str, collection: str) -> None:
        self.server = server
        self.url = server.url
        self.http = server.session()
        self.project = project
        self.session_id = session_id
        self.collection = collection

    def install(self, data: dict, enable: bool = True) -> dict[str, int]:
        """Install (or find) a command and, as admin and owner do, enable its wrappers site-wide
        and in the project; wrapper name → id."""
        answer = self.http.post(f"{self.url}/xapi/commands", json=data)
        assert answer.status_code in (201, 409), answer.text
        query = {"name": data["name"], "version": data["version"]}
        [listed] = self.http.get(f"{self.url}/xapi/commands", params=query).json()
        wrappers = {w["name"]: w["id"] for w in listed["xnat"]}
        for wrapper in wrappers.values() if enable else ():
            for scope in ("", f"/projects/{self.project}"):
                self.http.put(f"{self.url}/xapi{scope}/wrappers/{wrapper}/enabled").raise_for_status()
        return wrappers

    def launch(self, wrapper_id: int, root: str, values: dict, http=None):
        http = http or self.http
        return http.post(
            f"{self.url}/xapi/projects/{self.project}/wrappers/{wrapper_id}/root/{root}/launch",
            json=values,
        )

    def launch_running(self, data: dict) -> int:
        """Install a session command, launch it on the sample session, wait until it runs."""
        wrapper = self.install(data)[f"{data['name']}-session"]
        job_id = self.launch(wrapper, "session", {"session": self.session_id}).json()["id"]
        deadline = time.monotonic() + 60
        while self.http.get(f"{self.url}/xapi/containers/{job_id}").json()["status"] != "Running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        return job_id

    def wait(self, job_id: int, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"{self.url}/xapi/containers/{job_id}").json()
            if job["status"] in FINAL:
                return job
            time.sleep(0.2)
        raise AssertionError(f"container {job_id} still {job['status']}: {job}")

    def resources(self, uri: str) -> dict[str, dict]:
        rows = self.http.get(f"{self.url}{uri}/resources", params={"format": "json"})
        rows.raise_for_status()
        return {r["label"]: r for r in rows.json()["ResultSet"]["Result"]}

    def files(self, uri: str) -> list[str]:
        rows = self.http.get(f"{self.url}{uri}/files", params={"format": "json"}).json()
        return sorted(r["Name"] for r in rows["ResultSet"]["Result"])

    def scans(self) -> list[dict]:
        rows = self.http.get(f"{self.url}/data/experiments/{self.session_id}/scans",
                             params={"format": "json"}).json()  # fmt: skip
        return rows["ResultSet"]["Result"]


@pytest.fixture(scope="module")
def site(xnat_server) -> Site:
    project = "CS_LOCAL"
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        built = build_sample_project(session, project, subjects=1)
    return Site(xnat_server, project, built[0].session_id, built[0].roi_collection)


def test_dicom_to_nifti_on_a_scan(site: Site):
    wrappers = site.install(json.loads((REPO / "command_json/dicom-to-nifti.json").read_text()))
    scan = site.scans()[0]["ID"]
    uri = f"/archive/experiments/{site.session_id}/scans/{scan}"
    answer = site.launch(wrappers["dicom-to-nifti-scan"], "scan", {"scan": uri})
    assert answer.status_code == 200, answer.text
    job = site.wait(answer.json()["id"])
    assert job["status"] == "Complete", job["message"]
    assert [h["status"] for h in job["history"]] == [
        "Created", "Running", "Finalizing", "Complete"]  # fmt: skip
    resources = site.resources(f"/data/experiments/{site.session_id}/scans/{scan}")
    assert "NIFTI" in resources
    assert site.files(f"/data/experiments/{site.session_id}/scans/{scan}/resources/NIFTI") == [
        f"{scan}.nii.gz"
    ]


def test_roi_to_mask_on_an_roi_collection(site: Site):
    wrappers = site.install(json.loads((REPO / "command_json/roi-to-mask.json").read_text()))
    assessors = site.http.get(f"{site.url}/data/experiments/{site.session_id}/assessors",
                              params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
    roi = next(a for a in assessors if a["label"] == site.collection)
    # a label map in the project's ML_MODELS resource
    site.http.put(
        f"{site.url}/data/projects/{site.project}/resources/ML_MODELS/files/region2MaskValueMap.txt",
        data=b"Grey Matter=1\nWhite Matter=2\n",
        params={"overwrite": "true"},
    ).raise_for_status()
    uri = f"/archive/experiments/{site.session_id}/assessors/{roi['ID']}"
    answer = site.launch(wrappers["roi-to-mask-roi-collection"], "roi-collection",
                         {"roi-collection": uri})  # fmt: skip
    assert answer.status_code == 200, answer.text
    job = site.wait(answer.json()["id"], timeout=300)
    logs = site.http.get(f"{site.url}/xapi/containers/{job['id']}/logs/stderr").text
    assert job["status"] == "Complete", (job, logs)
    assessor = f"/data/experiments/{site.session_id}/assessors/{roi['ID']}"
    labels = site.files(f"{assessor}/resources/LABELMAP")
    assert {"labels.nii.gz", "labels.json", "masks.json"} <= set(labels), labels
    assert sum(name.endswith(".nii.gz") for name in labels) == 3, labels  # 2 ROIs + composite
    session = f"/data/experiments/{site.session_id}"
    images = [
        f"{session}/scans/{s['ID']}/resources/NIFTI/files/image.nii.gz"
        for s in site.scans()
        if "NIFTI" in site.resources(f"{session}/scans/{s['ID']}")
        and "image.nii.gz" in site.files(f"{session}/scans/{s['ID']}/resources/NIFTI")
    ]
    assert len(images) == 1, images  # on the referenced scan only
    # the label map lies exactly on the grid of the image NIfTI of the referenced scan
    image = _nifti(site, images[0])
    label_map = _nifti(site, f"{assessor}/resources/LABELMAP/files/labels.nii.gz")
    assert image.shape == label_map.shape
    assert np.allclose(image.affine, label_map.affine)
    assert set(np.unique(np.asarray(label_map.dataobj))) <= {0, 1, 2}
    assert (np.asarray(label_map.dataobj) > 0).any()


def test_bulk_launch_over_scans(site: Site):
    wrappers = site.install(json.loads((REPO / "command_json/dicom-to-nifti.json").read_text()))
    scans = [f"/archive/experiments/{site.session_id}/scans/{s['ID']}" for s in site.scans()]
    answer = site.http.post(
        f"{site.url}/xapi/projects/{site.project}/wrappers/{wrappers['dicom-to-nifti-scan']}"
        "/root/scan/bulklaunch",
        json={"scan": json.dumps([*scans, {"not": "a uri"}])},
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert len(report["successes"]) == len(scans) and len(report["failures"]) == 1
    assert "'scan'" in report["failures"][0]["message"]
    jobs = [site.wait(s["id"]) for s in report["successes"]]
    assert {j["status"] for j in jobs} == {"Complete"}
    listed = site.http.get(f"{site.url}/xapi/containers",
                           params={"bulk-launch-id": report["bulk-launch-id"]}).json()  # fmt: skip
    assert sorted(j["id"] for j in listed) == sorted(j["id"] for j in jobs)


def test_failing_command_uploads_nothing_and_keeps_logs(site: Site):
    data = _command(
        "fails", "echo partial > /output/x.txt; echo 'went wrong' >&2; exit 3",
        [{"name": "o", "mount": "out", "required": True}],
        [_handler("h", "o", "FAILS")],
    )  # fmt: skip
    wrapper = site.install(data)["fails-session"]
    answer = site.launch(wrapper, "session", {"session": f"/archive/experiments/{site.session_id}"})
    job = site.wait(answer.json()["id"])
    assert job["status"] == "Failed" and job["exit-code"] == "3", job
    assert "exited with code 3" in job["message"]
    assert "FAILS" not in site.resources(f"/data/experiments/{site.session_id}")
    stderr = site.http.get(f"{site.url}/xapi/containers/{job['id']}/logs/stderr")
    assert stderr.status_code == 200 and "went wrong" in stderr.text


def test_missing_required_output_is_failed_upload_with_nothing_uploaded(site: Site):
    data = _command(
        "halfdone", "echo ok > /output/a.txt",
        [{"name": "a", "mount": "out", "required": True},
         {"name": "b", "mount": "out2", "required": True}],
        [_handler("ha", "a", "HALF_A"),
         _handler("hb", "b", "HALF_B")],
    )  # fmt: skip
    wrapper = site.install(data)["halfdone-session"]
    answer = site.launch(wrapper, "session", {"session": site.session_id})
    job = site.wait(answer.json()["id"])
    assert job["status"] == "Failed (Upload)", job
    assert "'b' produced no files" in job["message"]
    labels = site.resources(f"/data/experiments/{site.session_id}")
    assert "HALF_A" not in labels and "HALF_B" not in labels


def test_assessor_handler_creates_the_assessor_and_a_resource_on_it(site: Site):
    """Output handlers of type Assessor PUT the command's XML (inbody=true), as XNAT's do; a
    Resource handler can then hang a resource on that new assessor."""
    xml = ('<icr:roiCollectionData xmlns:icr="http://www.icr.ac.uk/icr" label="made_#TAG#">'
           "<icr:collectionType>RTSTRUCT</icr:collectionType></icr:roiCollectionData>")  # fmt: skip
    data = _command(
        "assessed", f"echo '{xml}' > /output/assessor.xml; echo contours > /output2/rt.dcm",
        [{"name": "xml", "mount": "out", "path": "assessor.xml", "required": True},
         {"name": "rt", "mount": "out2", "required": True}],
        [{"name": "as", "type": "Assessor", "accepts-command-output": "xml",
          "as-a-child-of": "session"},
         {"name": "rs", "type": "Resource", "accepts-command-output": "rt",
          "as-a-child-of": "as", "label": "RTSTRUCT"}],
        [{"name": "TAG", "type": "string", "required": True}],
    )  # fmt: skip
    wrapper = site.install(data)["assessed-session"]
    answer = site.launch(wrapper, "session", {"session": site.session_id, "TAG": "x1"})
    job = site.wait(answer.json()["id"])
    assert job["status"] == "Complete", job
    query = {"format": "json", "columns": "ID,label,collectionType"}
    session = f"{site.url}/data/experiments/{site.session_id}"
    assessors = site.http.get(f"{session}/assessors", params=query)
    [made] = [a for a in assessors.json()["ResultSet"]["Result"] if a["label"] == "made_x1"]
    assert made["collectionType"] == "RTSTRUCT"
    uri = f"/data/experiments/{site.session_id}/assessors/{made['ID']}"
    assert site.files(f"{uri}/resources/RTSTRUCT") == ["rt.dcm"]


def test_fifty_launches_at_once(site: Site):
    data = _command(
        "many", "echo #N# > /output/n.txt",
        [{"name": "o", "mount": "out", "required": True}],
        [_handler("h", "o", "MANY_#N#")],
        inputs=[{"name": "N", "type": "number", "required": True}],
    )  # fmt: skip
    wrapper = site.install(data)["many-session"]
    from concurrent.futures import ThreadPoolExecutor

    def go(n: int) -> int:
        answer = site.launch(wrapper, "session", {"session": site.session_id, "N": n},
                             http=site.server.session())  # fmt: skip
        assert answer.status_code == 200, answer.text
        return answer.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(go, range(50)))
    assert len(set(ids)) == 50
    jobs = [site.wait(i, timeout=600) for i in ids]
    assert [j["status"] for j in jobs] == ["Complete"] * 50, [j["message"] for j in jobs]
    labels = site.resources(f"/data/experiments/{site.session_id}")
    assert {f"MANY_{n}" for n in range(50)} <= set(labels)
    # They ran a few at a time (the local backend's slots), the others waiting their turn.
    slots = max(DEFAULT_MIN_SLOTS, os.cpu_count() or 1)
    assert any(h["message"] == f"waiting: all {slots} local job slots are in use"
               for j in jobs for h in j["history"])  # fmt: skip
    assert _most_at_once(jobs) <= slots


def _most_at_once(jobs: list[dict]) -> int:
    """The most jobs that were between Running and their end at one moment."""
    moments = []
    for job in jobs:
        times = {h["status"]: h["time-recorded"] for h in job["history"]}
        moments += [(times["Running"], 1), (times["Complete"], -1)]
    running = most = 0
    for _time, step in sorted(moments, key=lambda m: (m[0], m[1])):
        running += step
        most = max(most, running)
    return most


def test_a_job_waiting_for_a_slot_can_be_killed(start_xnat_server):
    """With one slot the second job waits (`Created`); killed there, it never runs, and the
    third runs once the first ends."""
    server = start_xnat_server("one-slot", ["--backend-option", "local_slots=1"])
    with connect(server.url, server.user, server.password) as session:
        built = build_sample_project(session, "CS_SLOTS", subjects=1)
    site = Site(server, "CS_SLOTS", built[0].session_id, built[0].roi_collection)
    data = _command(
        "queued", "sleep #S#; echo done > /output/x.txt",
        [{"name": "o", "mount": "out", "required": True}], [_handler("h", "o", "Q_#S#")],
        inputs=[{"name": "S", "type": "number", "required": True}],
    )  # fmt: skip
    wrapper = site.install(data)["queued-session"]
    first, second, third = (
        site.launch(wrapper, "session", {"session": site.session_id, "S": s}).json()["id"]
        for s in (3, 1, 2)
    )
    waiting = site.http.get(f"{site.url}/xapi/containers/{second}").json()
    assert waiting["status"] == "Created"
    assert waiting["history"][-1]["message"] == "waiting: all 1 local job slots are in use"
    assert site.http.post(f"{site.url}/xapi/containers/{second}/kill").text == "Killed"
    assert [site.wait(i)["status"] for i in (first, second, third)] == [
        "Complete", "Killed", "Complete"]  # fmt: skip
    assert set(site.resources(f"/data/experiments/{site.session_id}")) >= {"Q_3", "Q_2"}
    assert "Q_1" not in site.resources(f"/data/experiments/{site.session_id}")


def test_jobs_waiting_for_a_slot_survive_a_kill_9_of_the_server(start_xnat_server):
    """The line of waiting jobs lives in memory only: killed -9 with one job running and two
    waiting (`Created`), the restarted server runs all three to their end, one at a time."""
    server = start_xnat_server("one-slot-kill", ["--backend-option", "local_slots=1"])
    with connect(server.url, server.user, server.password) as session:
        built = build_sample_project(session, "CS_KILL9", subjects=1)[0]
    site = Site(server, "CS_KILL9", built.session_id, built.roi_collection)
    data = _command(
        "lined", "sleep #S#; echo done > /output/x.txt",
        [{"name": "o", "mount": "out", "required": True}], [_handler("h", "o", "K_#N#")],
        inputs=[{"name": "S", "type": "number", "required": True},
                {"name": "N", "type": "number", "required": True}],
    )  # fmt: skip
    wrapper = site.install(data)["lined-session"]
    ids = [site.launch(wrapper, "session", {"session": built.session_id, "S": 3, "N": n})
           .json()["id"] for n in range(3)]  # fmt: skip
    deadline = time.monotonic() + 60
    while site.http.get(f"{server.url}/xapi/containers/{ids[0]}").json()["status"] != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    server.process.kill()  # SIGKILL: no shutdown code runs
    server.process.wait()
    server.process = None
    server.start()
    site.http = server.session()
    assert [site.wait(i, timeout=180)["status"] for i in ids] == ["Complete"] * 3
    assert {"K_0", "K_1", "K_2"} <= set(site.resources(f"/data/experiments/{built.session_id}"))


def test_a_project_deleted_under_its_job_frees_the_slot(start_xnat_server):
    """With one slot, a job whose project is deleted while it runs (its record goes with it)
    gives its slot back: the next project's job runs to its end instead of waiting for ever."""
    server = start_xnat_server("one-slot-retire", ["--backend-option", "local_slots=1"])
    with connect(server.url, server.user, server.password) as session:
        gone = build_sample_project(session, "CS_GONE", subjects=1)[0]
        kept = build_sample_project(session, "CS_KEPT", subjects=1)[0]
    data = _command(
        "lingers", "sleep #S#; echo done > /output/x.txt",
        [{"name": "o", "mount": "out", "required": True}], [_handler("h", "o", "L_#S#")],
        inputs=[{"name": "S", "type": "number", "required": True}],
    )  # fmt: skip
    first = Site(server, "CS_GONE", gone.session_id, gone.roi_collection)
    second = Site(server, "CS_KEPT", kept.session_id, kept.roi_collection)
    wrapper = first.install(data)["lingers-session"]
    second.install(data)
    doomed = first.launch(wrapper, "session", {"session": gone.session_id, "S": 600}).json()["id"]
    deadline = time.monotonic() + 120
    while first.http.get(f"{server.url}/xapi/containers/{doomed}").json()["status"] != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    first.http.delete(f"{server.url}/data/projects/CS_GONE").raise_for_status()
    job = second.launch(wrapper, "session", {"session": kept.session_id, "S": 1}).json()["id"]
    assert second.wait(job, timeout=120)["status"] == "Complete"


def test_kill_a_running_job(site: Site):
    data = _command(
        "sleeper", "sleep 60; echo late > /output/x.txt",
        [{"name": "o", "mount": "out", "required": True}],
        [_handler("h", "o", "SLEPT")],
    )  # fmt: skip
    job_id = site.launch_running(data)
    assert site.http.post(f"{site.url}/xapi/containers/{job_id}/kill").status_code == 200
    job = site.wait(job_id, timeout=30)
    assert job["status"] == "Killed"
    assert "SLEPT" not in site.resources(f"/data/experiments/{site.session_id}")


def test_bad_launches(site: Site):
    wrappers = site.install(json.loads((REPO / "command_json/dicom-to-nifti.json").read_text()))
    wrapper = wrappers["dicom-to-nifti-scan"]
    missing = site.launch(wrapper, "scan", {})
    assert missing.status_code == 400 and "'scan'" in missing.json()["message"]
    unknown = site.launch(wrapper, "scan", {"scan": "/archive/x", "colour": "red"})
    assert unknown.status_code == 400 and "'colour'" in unknown.json()["message"]
    wrong = site.launch(wrapper, "scan", {"scan": ["a", "b"]})
    assert wrong.status_code == 400 and "'scan'" in wrong.json()["message"]
    data = _command("typed", "echo #FLAG# > /output/x", [], [],
                    inputs=[{"name": "FLAG", "type": "boolean"}])  # fmt: skip
    typed = site.install(data)["typed-session"]
    bad_bool = site.launch(typed, "session", {"session": site.session_id, "FLAG": "maybe"})
    assert bad_bool.status_code == 400 and "'FLAG'" in bad_bool.json()["message"]
    assert site.launch(999999, "scan", {"scan": "x"}).status_code == 404
    site.server.add_user("cs_reader", "reader-pass", site.project, "Collaborator")
    reader = site.server.session("cs_reader", "reader-pass")
    forbidden = site.launch(wrapper, "scan", {"scan": "/archive/x"}, http=reader)
    assert forbidden.status_code == 403
    assert site.http.post(f"{site.url}/xapi/commands", data=b"{not json").status_code == 400
    huge = site.http.post(f"{site.url}/xapi/commands", data=b"{" + b" " * 2_000_000 + b"}")
    assert huge.status_code == 413 and "larger than" in huge.text
    launch_url = f"{site.url}/xapi/projects/{site.project}/wrappers/{wrapper}/root/scan/launch"
    listed = site.http.post(launch_url, json=["/archive/x"])
    assert listed.status_code == 400 and "JSON object" in listed.text
    garbled = site.http.post(launch_url, data=b"{oops",
                             headers={"Content-Type": "application/json"})  # fmt: skip
    assert garbled.status_code == 400
    assert reader.post(f"{site.url}/xapi/commands", json={"name": "x"}).status_code == 403


def test_wrong_typed_object_inputs_are_400_naming_the_input(site: Site):
    """Every object input takes only its own kind: by URI shape, and by the object's real type
    (an experiment URI can name an assessor)."""
    scan_wrapper = site.install(
        json.loads((REPO / "command_json/dicom-to-nifti.json").read_text())
    )["dicom-to-nifti-scan"]
    session_wrapper = site.install(_command("typed-object", "true", [], []))["typed-object-session"]
    scan_id = site.scans()[0]["ID"]
    session_uri = f"/archive/experiments/{site.session_id}"
    assessors = site.http.get(f"{site.url}/data{session_uri[len('/archive'):]}/assessors",
                              params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
    assessor_id = next(a["ID"] for a in assessors if a["label"] == site.collection)
    wrong = [
        (session_wrapper, "session", f"{session_uri}/scans/{scan_id}", "Scan"),
        (session_wrapper, "session", f"/archive/experiments/{assessor_id}", "Assessor"),
        (session_wrapper, "session", f"{session_uri}/assessors/{site.collection}", "Assessor"),
        (session_wrapper, "session", f"/archive/projects/{site.project}", "Project"),
        (session_wrapper, "session", f"{session_uri}/resources/DICOM", "Resource"),
        (session_wrapper, "session", "/archive/experiments/NO_SUCH_SESSION", "no such object"),
        (scan_wrapper, "scan", session_uri, "Experiment"),
        (scan_wrapper, "scan", scan_id, "not the URI of a Scan"),
    ]
    for wrapper, root, value, problem in wrong:
        answer = site.launch(wrapper, root, {root: value})
        assert answer.status_code == 400, (value, answer.text)
        assert f"'{root}'" in answer.json()["message"] and problem in answer.json()["message"]
    right = site.launch(session_wrapper, "session", {"session": site.session_id})
    assert right.status_code == 200, right.text
    assert site.wait(right.json()["id"])["status"] == "Complete"


def test_available_and_enablement(site: Site):
    command = json.loads((REPO / "command_json/roi-to-mask.json").read_text())
    command["version"] = "0.0-enablement"  # a fresh install, apart from the other tests' one
    wrappers = site.install(command, enable=False)
    wrapper = wrappers["roi-to-mask-roi-collection"]
    available = site.http.get(
        f"{site.url}/xapi/commands/available",
        params={"project": site.project, "xsiType": "icr:roiCollectionData"},
    )
    listed = {a["wrapper-id"]: a for a in available.json()}[wrapper]
    assert listed["root-element-name"] == "roi-collection" and listed["enabled"] is False
    base = f"{site.url}/xapi/projects/{site.project}/wrappers/{wrapper}"
    site_wide = f"{site.url}/xapi/wrappers/{wrapper}"
    # As in XNAT, a new command's wrappers start disabled: the site's switch, then the project's.
    refused = site.launch(wrapper, "roi-collection", {"roi-collection": "/archive/x"})
    assert refused.status_code == 400 and "not enabled site-wide" in refused.text
    assert site.http.put(f"{site_wide}/enabled").status_code == 200
    refused = site.launch(wrapper, "roi-collection", {"roi-collection": "/archive/x"})
    assert refused.status_code == 400 and f"not enabled in project {site.project!r}" in refused.text
    assert site.http.get(f"{base}/enabled").json() is False
    assert site.http.put(f"{base}/enabled").status_code == 200
    assert site.http.get(f"{base}/enabled").json() is True
    assert site.http.put(f"{base}/disabled").status_code == 200
    assert site.http.get(f"{base}/enabled").json() is False
    refused = site.launch(wrapper, "roi-collection", {"roi-collection": "/archive/x"})
    assert refused.status_code == 400
    assert site.http.put(f"{base}/enabled").status_code == 200
    assert site.http.get(f"{base}/enabled").json() is True
    assert site.http.put(f"{site_wide}/disabled").status_code == 200
    assert site.http.get(f"{base}/enabled").json() is False
    assert site.http.put(f"{site_wide}/enabled").status_code == 200
    assert site.http.get(f"{base}/enabled").json() is True


def test_restart_requeues_running_local_jobs(site: Site):
    """A local job cannot outlive its server: at start the orphan is stopped and the same job
    runs again from scratch, to its end."""
    data = _command(
        "napper", "echo $XNAT_ML_LOCAL_JOB >> /output/who; sleep 8; echo late > /output/x.txt",
        [{"name": "o", "mount": "out", "required": True}],
        [_handler("h", "o", "NAPPED")],
    )  # fmt: skip
    job_id = site.launch_running(data)
    site.server.restart()
    job = site.wait(job_id)
    assert job["status"] == "Complete", job
    assert [(h["status"], h["message"]) for h in job["history"]][:3] == [
        ("Created", "launched by admin"), ("Running", "started on local"),
        ("Created", "requeued after a server restart (attempt 2 of 3)")]  # fmt: skip
    assert [h["status"] for h in job["history"]][3:] == ["Running", "Finalizing", "Complete"]
    napped = f"/data/experiments/{site.session_id}/resources/NAPPED/files"
    assert site.http.get(f"{site.url}{napped}/who").text == f"xnat-ml-{job_id}\n"  # a fresh mount


def test_a_job_killed_on_request_is_not_requeued(site: Site):
    data = _command("sleeper", "sleep 60", [], [])
    job_id = site.launch_running(data)
    assert site.http.post(f"{site.url}/xapi/containers/{job_id}/kill").text == "Killed"
    before = site.wait(job_id)
    assert before["status"] == "Killed", before
    site.server.restart()
    time.sleep(1)
    after = site.http.get(f"{site.url}/xapi/containers/{job_id}").json()
    assert after["status"] == "Killed" and after["history"] == before["history"]


def test_commands_run_by_hand(site: Site, tmp_path: Path, capsys):
    """`xnat-ml commands run`: the same engine without the server's Container Service."""
    from xnat_ml.cli import main

    scan = site.scans()[-1]["ID"]
    uri = f"/archive/experiments/{site.session_id}/scans/{scan}"
    args = ["commands", "run", str(REPO / "command_json/dicom-to-nifti.json"), "-i", f"scan={uri}",
            "--host", site.url, "--user", site.server.user, "--password", site.server.password,
            "--work-dir", str(tmp_path / "work")]  # fmt: skip
    assert main([*args, "--dry-run"]) == 0
    assert f"xnat-ml convert series /input --out /output/{scan}.nii.gz" in capsys.readouterr().out
    assert main(args) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "Complete" in out and f"{uri}/resources/NIFTI" in out


def test_xnat_debug_command_runs_as_published(site: Site):
    """NrgXnat's own debug command, installed unchanged, on a scan: its input mount holds the
    scan's resources and its output comes back as DEBUG_OUTPUT. Its `command` value is one
    word here: a whole shell line needs the server's `--raw-input debug:command`."""
    path = require(XNAT_COMMANDS / "debug.command.json")
    wrappers = site.install(json.loads(path.read_text()))
    scan = site.scans()[0]["ID"]
    uri = f"/archive/experiments/{site.session_id}/scans/{scan}"
    answer = site.launch(wrappers["debug-scan"], "scan", {"scan": uri, "command": "env"})
    assert answer.status_code == 200, answer.text
    job = site.wait(answer.json()["id"])
    assert job["status"] == "Complete", job["message"]
    resource = f"/data/experiments/{site.session_id}/scans/{scan}/resources/DEBUG_OUTPUT"
    assert site.files(resource) == ["out.txt"]
    text = site.http.get(f"{site.url}{resource}/files/out.txt").text
    assert "XNAT_HOST=" in text and "XNAT_ML_ADMIN_PASSWORD" not in text
    piped = site.launch(wrappers["debug-scan"], "scan",
                        {"scan": uri, "command": "find /input -type f | wc -l"})  # fmt: skip
    job = site.wait(piped.json()["id"])  # one literal word: no such program, nothing else ran
    assert job["status"] == "Failed" and job["exit-code"] == "127", job


def test_job_gets_a_working_alias_token_not_the_password(site: Site):
    probe = (
        "python -c \"import os, requests; e = os.environ; "
        "r = requests.get(e['XNAT_HOST'] + '/data/projects?format=json', "
        "auth=(e['XNAT_USER'], e['XNAT_PASS'])); print(e['XNAT_USER'], e['XNAT_PASS'], "
        "r.status_code)\""
    )
    data = _command("whoami", probe, [], [])
    wrapper = site.install(data)["whoami-session"]
    job = site.wait(site.launch(wrapper, "session", {"session": site.session_id}).json()["id"])
    assert job["status"] == "Complete", job["message"]
    stdout = site.http.get(f"{site.url}/xapi/containers/{job['id']}/logs/stdout").text
    alias, secret, status = stdout.split()
    assert status == "200"
    assert alias != site.server.user and secret != site.server.password
