"""MONAI Label's label save when the XNAT's disk is full (the server's data folder on a small
tmpfs filled to the brim): XNAT's 507 with one line of detail, no collection stored and the
archive consistent; once room is made the same save is stored."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import requests
from archive_state import assert_consistent
from servers import XnatServer
from small_disk import fill, small_tmpfs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from inference_models import tissues_model  # noqa: E402

from xnat_ml.sample.project import build_sample_project  # noqa: E402
from xnat_ml.training.project_models import install_model  # noqa: E402
from xnat_ml.xnat import connect  # noqa: E402

PROJECT, USER, PASSWORD = "MLFULL", "mlfull_member", "mlfull-pw"


def _collections(server: XnatServer, session_id: str) -> list[str]:
    answer = server.session().get(f"{server.url}/data/experiments/{session_id}/assessors",
                                  params={"format": "json"})  # fmt: skip
    rows = answer.json()["ResultSet"]["Result"]
    return sorted(r["label"] for r in rows)


def test_a_label_saved_on_a_full_disk_is_507_and_stores_nothing(tmp_path):
    (tmp_path / "small-fs").mkdir()
    with small_tmpfs(tmp_path / "small-fs", size="64m") as mount:
        server = XnatServer(mount / "data")
        server.start()
        try:
            server.session().put(f"{server.url}/data/projects/{PROJECT}").raise_for_status()
            server.add_user(USER, PASSWORD, PROJECT, "Member")
            with connect(server.url, server.user, server.password) as session:
                [built] = build_sample_project(session, PROJECT, subjects=1)
                install_model(session, PROJECT, tissues_model(tmp_path / "model"), "tissues")
            http = requests.Session()
            http.auth = (USER, PASSWORD)
            url = f"{server.url}/monailabel/{PROJECT}"
            image = sorted(http.get(f"{url}/datastore/", params={"output": "all"})
                           .json()["objects"])[0]  # fmt: skip
            params = {"params": (None, json.dumps({"result_extension": ".nrrd"}))}
            inferred = http.post(f"{url}/infer/tissues", params={"image": image, "output": "image"},
                                 files=params)  # fmt: skip
            assert inferred.status_code == 200, inferred.text
            before = _collections(server, built.session_id)

            filler = fill(mount)
            saved = http.put(f"{url}/datastore/label", params={"image": image},
                             files={"label": ("label.nrrd", inferred.content)})  # fmt: skip
            assert saved.status_code == 507, saved.text
            detail = saved.json()["detail"]
            assert "507 Insufficient Storage" in detail and "\n" not in detail, detail
            assert _collections(server, built.session_id) == before
            assert_consistent(server.data_dir)

            filler.unlink()
            saved = http.put(f"{url}/datastore/label", params={"image": image},
                             files={"label": ("label.nrrd", inferred.content)})  # fmt: skip
            assert saved.status_code == 200, saved.text
            assert _collections(server, built.session_id) == sorted([*before,
                                                                     saved.json()["label"]])
        finally:
            server.stop()
