"""The MONAI Label API mounted by the embedded server (/monailabel/<project>/), driven by MONAI
Label's own client (monailabel 0.8.5, unmodified, in .venv-monailabel: `make monailabel-client`)
and by the OHIF v3 extension's calls replayed with requests.

One sample session (T1w + T2w DICOM, its RTSTRUCT collection), the tissues model (small network,
random weights: the mechanics are under test, and the API's answer must equal `xnat-ml infer`'s
voxel for voxel), the roi-to-mask subscription, and users of each role.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from inference_models import tissues_model, tissues_model_with_lineage  # noqa: E402

from xnat_ml.events.install import default_handlers, install_handler  # noqa: E402
from xnat_ml.imaging.series import load_series  # noqa: E402
from xnat_ml.sample.project import build_sample_project  # noqa: E402
from xnat_ml.training.project_models import install_model  # noqa: E402
from xnat_ml.xnat import connect, download_resource  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SIDE_PYTHON = REPO / ".venv-monailabel" / "bin" / "python"
PROJECT = "MLAPI1"
USERS = {"Member": "mlapi_member", "Collaborator": "mlapi_collab"}
OUTSIDER = "mlapi_outsider"

# Runs in the side environment: MONAI Label's client against URL, as USER; prints `out` as JSON.
PRELUDE = """
import json, os
from monailabel.client import MONAILabelClient
client = MONAILabelClient(os.environ["URL"], tmpdir=os.environ["TMP"])
if os.environ.get("USER_NAME"):
    client.update_auth(client.auth_token(os.environ["USER_NAME"], os.environ["USER_PASS"]))
out = None
"""


def password(user: str) -> str:
    return f"{user}-pw"


class Site:
    def __init__(self, server, session_id: str, series_dir: Path, tmp: Path) -> None:
        self.server, self.session_id, self.tmp = server, session_id, tmp
        self.url = f"{server.url}/monailabel/{PROJECT}"
        self.series = load_series(series_dir)
        self.uid = self.series.series_uid

    def client(self, code: str, user: str | None = USERS["Member"]) -> object:
        """`code` run by MONAI Label's client as `user`; its `out`."""
        if not SIDE_PYTHON.exists():
            pytest.skip("no .venv-monailabel (make monailabel-client)")
        env = {"URL": self.url, "TMP": str(self.tmp), "USER_NAME": user or "",
               "USER_PASS": password(user) if user else "", "PATH": "/usr/bin:/bin"}  # fmt: skip
        done = subprocess.run([str(SIDE_PYTHON), "-c", PRELUDE + code + "\nprint(json.dumps(out))"],
                              env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def http(self, user: str | None) -> requests.Session:
        http = requests.Session()
        if user:
            http.auth = (user, password(user))
        return http


@pytest.fixture(scope="module")
def site(xnat_server, tmp_path_factory) -> Site:
    work = tmp_path_factory.mktemp("mlapi")
    xnat_server.session().put(f"{xnat_server.url}/data/projects/{PROJECT}").raise_for_status()
    for role, user in USERS.items():
        xnat_server.add_user(user, password(user), PROJECT, role)
    xnat_server.add_user(OUTSIDER, password(OUTSIDER))
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        [built] = build_sample_project(session, PROJECT, subjects=1)
        for handler in default_handlers():
            install_handler(session, PROJECT, handler)
        model = tissues_model_with_lineage(session, PROJECT, work / "model")
        assert install_model(session, PROJECT, model, "tissues")[0] == 1
        scans = session.get_json(f"/data/experiments/{built.session_id}/scans",
                                 query={"format": "json"})["ResultSet"]["Result"]  # fmt: skip
        t1 = next(s["ID"] for s in scans if s["series_description"].startswith("T1w"))
        download_resource(session, f"/data/experiments/{built.session_id}/scans/{t1}/"
                          "resources/DICOM", work / "t1")  # fmt: skip
    (work / "client").mkdir()
    return Site(xnat_server, built.session_id, work / "t1", work / "client")


def test_auth_info_and_datastore_with_monailabel_client(site: Site):
    out = site.client("""
out = {"enabled": client.auth_enabled(), "valid": client.auth_valid_token(),
       "info": client.info(), "datastore": client.datastore()}
""")
    assert out["enabled"] is True and out["valid"] is True
    info = out["info"]
    assert {"tissues", "tissues_v1"} <= set(info["models"])
    assert info["models"]["tissues"]["type"] == "segmentation"
    assert info["models"]["tissues"]["dimension"] == 3
    assert set(info["labels"]) == set(info["models"]["tissues"]["labels"])
    assert set(info["strategies"]) == {"random", "first"}
    assert info["datastore"]["total"] == 2  # T1w and T2w
    objects = out["datastore"]["objects"]
    assert site.uid in objects
    assert objects[site.uid]["image"]["info"]["session_id"] == site.session_id
    # the sample's RTSTRUCT collection is drawn on the T1w: a person's label
    assert "final" in objects[site.uid]["labels"]


@pytest.fixture(scope="module")
def inferred(site: Site, xnat_server, tmp_path_factory) -> tuple[Path, dict, Path]:
    """MONAI Label client's infer (NRRD) as the Collaborator, and `xnat-ml infer --no-store`."""
    user = USERS["Collaborator"]
    out = site.client(f"""
path, params = client.infer("tissues", {site.uid!r}, {{"result_extension": ".nrrd"}})
out = [path, params]
""", user=user)
    path, params = Path(out[0]), out[1]
    to = tmp_path_factory.mktemp("mlapi-cli")
    done = subprocess.run(
        [sys.executable, "-m", "xnat_ml", "infer", "--project", PROJECT, "--session",
         site.session_id, "--model", "tissues:1", "--no-store", "--to", str(to),
         "--url", xnat_server.url, "--user", user, "--password", password(user)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path, params, to / "labelmap" / "labels.nii.gz"


def test_infer_nrrd_matches_xnat_ml_infer_voxel_for_voxel(site: Site, inferred):
    path, params, cli_labels = inferred
    assert path.suffix == ".nrrd"
    data, header = nrrd.read(str(path), index_order="F")
    expected = np.asanyarray(nib.load(cli_labels).dataobj)
    assert data.shape == expected.shape == site.series.shape
    assert np.array_equal(data, expected)
    assert data.any()
    assert params["label_names"] and params["model"] == "tissues" and params["version"] == 1
    # in the series grid, in LPS: a viewer lays it over the series unresampled
    assert header["space"] == "left-posterior-superior"
    assert np.allclose(header["space directions"], site.series.lps_affine[:3, :3].T)
    assert np.allclose(header["space origin"], site.series.lps_affine[:3, 3])


def test_ohif_v3_calls_replayed(site: Site):
    http = site.http(USERS["Collaborator"])
    info = http.get(f"{site.url}/info/")
    assert info.status_code == 200 and "tissues" in info.json()["models"]
    params = {"result_extension": ".nrrd", "result_dtype": "uint16"}
    answer = http.post(f"{site.url}/infer/tissues", params={"image": site.uid, "output": "image"},
                       files={"params": (None, json.dumps(params))})  # fmt: skip
    assert answer.status_code == 200, answer.text
    path = site.tmp / "ohif.nrrd"
    path.write_bytes(answer.content)
    data, header = nrrd.read(str(path), index_order="F")
    assert data.shape == site.series.shape and data.dtype == np.uint16
    assert np.allclose(header["space origin"], site.series.lps_affine[:3, 3])


def _wait_label_map(site: Site, label: str) -> dict:
    http = site.server.session()
    base = f"{site.server.url}/data/experiments/{site.session_id}/assessors"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        rows = http.get(base, params={"format": "json"}).json()["ResultSet"]["Result"]
        row = next((r for r in rows if r["label"] == label), None)
        if row is not None:
            files = http.get(f"{base}/{row['ID']}/resources/LABELMAP/files",
                             params={"format": "json"})  # fmt: skip
            if files.status_code == 200 and files.json()["ResultSet"]["Result"]:
                return row
        time.sleep(1)
    raise AssertionError(f"no LABELMAP on ROI collection {label}")


def test_saved_label_becomes_a_human_seg_with_its_label_map(site: Site, inferred):
    path = inferred[0]
    out = site.client(f"out = client.save_label({site.uid!r}, {str(path)!r}, params={{}})")
    label = out["label"]
    assert label.startswith(f"ML_{USERS['Member']}_")
    row = _wait_label_map(site, label)
    http = site.server.session()
    masks = http.get(f"{site.server.url}/data/experiments/{site.session_id}/assessors/"
                     f"{row['ID']}/resources/LABELMAP/files/masks.json")  # fmt: skip
    assert masks.json()["origin"] == "human"
    # the user's next save replaces it: still one collection of that label
    again = site.client(f"out = client.save_label({site.uid!r}, {str(path)!r}, params={{}})")
    assert again["label"] == label
    rows = http.get(f"{site.server.url}/data/experiments/{site.session_id}/assessors",
                    params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
    assert [r["label"] for r in rows].count(label) == 1


def test_tags_follow_the_seg_not_the_name(site: Site, inferred, tmp_path: Path):
    """A model's collection an annotator corrected and saved again in OHIF (its segments now
    MANUAL, its AI_ label kept) is a person's label (``final``); the same SEG with AUTOMATIC
    segments is a model's (``original``), whatever its name."""
    from xnat_ml.imaging.seg_write import write_seg
    from xnat_ml.monailabel.labels import segments_of
    from xnat_ml.monailabel.volumes import read_uploaded
    from xnat_ml.xnat.roi import upload_roi_collection

    labels = read_uploaded(inferred[2], site.series, tmp_path)  # the series grid
    with connect(site.server.url, site.server.user, site.server.password) as session:
        for label, manual in ((f"AI_tissues_v1_{site.session_id}", True), ("ML_MODEL_OUT", False)):
            seg = write_seg(labels, segments_of({"grey matter": 1, "white matter": 2}),
                            site.series, tmp_path / f"{label}.dcm", algorithm_name="tissues v1",
                            manual=manual, series_description=label)  # fmt: skip
            upload_roi_collection(session, PROJECT, site.session_id, label, seg, "SEG")
    _wait_label_map(site, f"AI_tissues_v1_{site.session_id}")  # roi-to-mask: origin human
    out = site.client("out = client.datastore()")
    tags = {c["label"]: tag for tag, entry in out["objects"][site.uid]["labels"].items()
            for c in entry["info"]["collections"]}  # fmt: skip
    assert tags[f"AI_tissues_v1_{site.session_id}"] == "final"
    assert tags["ML_MODEL_OUT"] == "original"


def test_activelearning_gives_an_image_without_a_final_label(site: Site):
    out = site.client('out = [client.next_sample("first", {}), client.next_sample("random", {})]')
    assert out[0]["id"] != site.uid  # the T1w has final labels; the T2w has none
    assert out[0]["id"] == out[1]["id"]
    assert out[0]["session_id"] == site.session_id


def test_collaborator_infers_but_neither_saves_nor_trains(site: Site, inferred):
    http = site.http(USERS["Collaborator"])
    with open(inferred[0], "rb") as label:
        saved = http.put(f"{site.url}/datastore/label", params={"image": site.uid},
                         files={"label": label, "params": (None, "{}")})  # fmt: skip
    assert saved.status_code == 403 and "Member" in saved.json()["detail"]
    trained = http.post(f"{site.url}/train/tissues", json={})
    assert trained.status_code == 403
    stopped = http.delete(f"{site.url}/train/")
    assert stopped.status_code == 403


@pytest.mark.parametrize("call", [("get", "info/"), ("get", "datastore/?output=all"),
                                  ("post", "infer/tissues?image={uid}&output=json"),
                                  ("post", "activelearning/first"), ("get", "train/")])  # fmt: skip
def test_outsider_sees_nothing(site: Site, call):
    method, path = call
    answer = getattr(site.http(OUTSIDER), method)(f"{site.url}/{path.format(uid=site.uid)}")
    assert answer.status_code == 404, answer.text
    assert "tissues" not in answer.text and site.uid not in answer.text


def test_without_or_with_wrong_credentials_401(site: Site):
    assert requests.get(f"{site.url}/info/").status_code == 401
    bearer = {"Authorization": "Bearer not-a-token:secret"}
    assert requests.get(f"{site.url}/info/", headers=bearer).status_code == 401
    token = requests.post(f"{site.url}/auth/token", data={"username": OUTSIDER, "password": "x"})
    assert token.status_code == 401 and "detail" in token.json()


@pytest.mark.parametrize("image", ["1.2.3.4", "../../../../etc/passwd", "%2e%2e%2f", "x" * 5000,
                                   "ALL", "*"])  # fmt: skip
def test_bad_and_path_like_image_ids_are_404(site: Site, image):
    http = site.http(USERS["Member"])
    for answer in (http.post(f"{site.url}/infer/tissues", params={"image": image}),
                   http.get(f"{site.url}/datastore/image", params={"image": image})):  # fmt: skip
        assert answer.status_code == 404, answer.text
        assert "detail" in answer.json()


def test_hostile_uploads_and_parameters_are_4xx(site: Site, inferred):
    http = site.http(USERS["Member"])
    label_url = f"{site.url}/datastore/label"
    uid = {"image": site.uid}
    garbled = http.put(label_url, params=uid, data=b"--x\r\nContent-Disposition: form-da",
                       headers={"Content-Type": "multipart/form-data; boundary=x"})  # fmt: skip
    assert 400 <= garbled.status_code < 500
    wrong = nib.Nifti1Image(np.ones((5, 6, 7), np.uint8), np.eye(4))
    nib.save(wrong, site.tmp / "wrong.nii.gz")
    with open(site.tmp / "wrong.nii.gz", "rb") as fh:
        shaped = http.put(label_url, params=uid, files={"label": fh})
    assert shaped.status_code == 422 and "grid" in shaped.json()["detail"]
    huge = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 100000 100000 100000\nencoding: raw\n\n"
    answer = http.put(label_url, params=uid, files={"label": ("huge.nrrd", huge + b"\0" * 64)})
    assert answer.status_code == 422 and "sizes" in answer.json()["detail"]
    junk = http.put(label_url, params=uid, files={"label": ("x.nrrd", b"\x00garbage" * 100)})
    assert junk.status_code == 422
    params = http.post(f"{site.url}/infer/tissues", params=uid,
                       files={"params": (None, "[" * 5000)})  # fmt: skip
    assert params.status_code == 422
    ext = http.post(f"{site.url}/infer/tissues", params=uid,
                    files={"params": (None, json.dumps({"result_extension": "/../x.sh"}))})
    assert ext.status_code == 422
    assert http.post(f"{site.url}/infer/nomodel", params=uid).status_code == 404
    assert http.post(f"{site.url}/infer/tissues_v9", params=uid).status_code == 404


def test_unknown_endpoints_404_in_monailabel_shape(site: Site):
    http = site.http(USERS["Member"])
    for path in ("nothing", "session/", "infer/wsi/tissues", "datastore/dataset"):
        answer = http.get(f"{site.url}/{path}")
        assert answer.status_code in (404, 405), path
        assert answer.json() == {"detail": "Not Found"} or answer.status_code == 405


@pytest.fixture(scope="module")
def trainable(xnat_server, tmp_path_factory) -> str:
    """A second project set up for training (tests/training/xnat_project.py: the tiny `blobs`
    dataset, the tissues model, the `tiny` config; tissues v2 with weights), finetune installed
    and enabled."""
    sys.path.insert(0, str(REPO / "tests" / "training"))
    from xnat_project import set_up

    project = "MLAPI2"
    http = xnat_server.session()
    http.put(f"{xnat_server.url}/data/projects/{project}").raise_for_status()
    xnat_server.add_user(USERS["Member"], password(USERS["Member"]), project, "Member")
    work = tmp_path_factory.mktemp("mlapi-train")
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        set_up(session, project, work, cases=3)
        # fine-tuning starts from weights: v2, the template with a small random network
        assert install_model(session, project, tissues_model(work / "model"), "tissues")[0] == 2
    command = json.loads((REPO / "command_json" / "finetune.json").read_text())
    if not [c for c in http.get(f"{xnat_server.url}/xapi/commands").json()
            if c["name"] == command["name"]]:  # fmt: skip
        http.post(f"{xnat_server.url}/xapi/commands", json=command).raise_for_status()
    [installed] = [c for c in http.get(f"{xnat_server.url}/xapi/commands").json()
                   if c["name"] == command["name"]]  # fmt: skip
    wrapper = installed["xnat"][0]["id"]
    http.put(f"{xnat_server.url}/xapi/wrappers/{wrapper}/enabled").raise_for_status()
    http.put(f"{xnat_server.url}/xapi/projects/{project}/wrappers/{wrapper}/enabled"
             ).raise_for_status()  # fmt: skip
    return project


def test_train_makes_a_run_in_ml_runs(site: Site, trainable: str):
    site.url = site.url.replace(f"/{PROJECT}", f"/{trainable}")
    try:
        started = site.client('out = client.train_start("tissues", {"config": "tiny"})')
        assert started["status"] == "SUBMITTED" and started["id"].startswith("monailabel-")
        assert started["dataset"] == "blobs:1"  # built again first: nothing new, so v1
        deadline = time.monotonic() + 900
        while True:
            status = site.client("out = client.train_status()")
            if status.get("status") != "RUNNING" or time.monotonic() > deadline:
                break
            time.sleep(3)
        if status["status"] != "DONE":  # say why: the job's log
            job = started["container"]
            logs = site.server.session().get(f"{site.server.url}/xapi/containers/{job}/logs/stderr")
            raise AssertionError(f"{status}\n{logs.text[-3000:]}")
        assert status["id"] == started["id"], status
        assert status["status"] == "DONE", status
        assert status["details"]["state"] == "completed"
        info = site.client("out = client.info()")
        assert info["train_stats"]["finetune"]["id"] == started["id"]
    finally:
        site.url = site.url.replace(f"/{trainable}", f"/{PROJECT}")


def test_xnat_ml_monailabel_serves_the_project_alone(site: Site):
    from xnat_ml.server.process import free_port

    port = free_port()
    member = USERS["Member"]
    server = subprocess.Popen(
        [sys.executable, "-m", "xnat_ml", "monailabel", "--project", PROJECT, "--port", str(port),
         "--models", "tissues:1", "--xnat", site.server.url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                requests.get(f"{url}/auth/", timeout=5)
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)
        assert requests.get(f"{url}/info/").status_code == 401  # no --user: callers log in
        token = requests.post(f"{url}/auth/token",
                              data={"username": member, "password": password(member)}).json()
        bearer = {"Authorization": f"{token['token_type']} {token['access_token']}"}
        info = requests.get(f"{url}/info/", headers=bearer)
        assert info.status_code == 200 and set(info.json()["models"]) == {"tissues", "tissues_v1"}
        missing = requests.get(f"{url}/nothing/here", headers=bearer)
        assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_infer_outputs_json_nifti_and_dicom_seg(site: Site, inferred):
    import pydicom

    http = site.http(USERS["Collaborator"])
    url, uid = f"{site.url}/infer/tissues_v1", site.uid
    answer = http.post(url, params={"image": uid, "output": "json"})
    assert answer.status_code == 200 and answer.json()["label_names"]
    params = {"params": (None, json.dumps({"result_extension": ".nii.gz"}))}
    nifti = http.post(url, params={"image": uid, "output": "image"}, files=params)
    (site.tmp / "result.nii.gz").write_bytes(nifti.content)
    expected, _ = nrrd.read(str(inferred[0]), index_order="F")
    result = nib.load(site.tmp / "result.nii.gz")
    assert np.array_equal(np.asanyarray(result.dataobj), expected)
    assert np.allclose(result.affine, site.series.affine)
    seg = http.post(url, params={"image": uid, "output": "dicom_seg"})
    (site.tmp / "seg.dcm").write_bytes(seg.content)
    ds = pydicom.dcmread(site.tmp / "seg.dcm")
    assert ds.Modality == "SEG"
    assert {s.SegmentAlgorithmType for s in ds.SegmentSequence} == {"AUTOMATIC"}
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
