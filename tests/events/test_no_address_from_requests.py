"""No address from a request: a `Host` header never decides where a launch or a job goes.

A Member saves an ROI collection (and launches a wrapper) with `Host:` naming a socket the
test listens on: the roi-to-mask job the admin's subscription launches still runs against the
server's own address, makes its label map, and nothing ever connects to the socket, so no token
can reach it. Local backend, the session's server (bound to loopback, no SITE_URL).
"""

from __future__ import annotations

import socket
import sqlite3
import threading

import pytest
from test_roi_to_mask_e2e import wait_for_jobs

from xnat_ml.layout import LABELMAP_RESOURCE
from xnat_ml.sample.project import build_sample_project
from xnat_ml.xnat import connect

pytestmark = pytest.mark.slow

WRAPPER = "roi-to-mask-roi-collection"


class Trap:
    """A listening loopback socket that records every connection and what it was sent."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _peer = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.received.append(conn.recv(65536) or b"(connected)")
                except OSError:
                    self.received.append(b"(connected)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def trap():
    listening = Trap()
    yield listening
    listening.close()


def test_a_host_header_never_receives_a_launch_or_a_token(xnat_server, project, cli, trap):
    url, admin = xnat_server.url, xnat_server.session()
    with connect(url, xnat_server.user, xnat_server.password) as session:
        [sample] = build_sample_project(session, project, subjects=1)
    installed = cli("events", "install", "--project", project)  # the admin owns it
    assert installed.returncode == 0, installed.stderr
    xnat_server.add_user("hostmember", "hostmember-pw", project, "Member")
    member = xnat_server.session("hostmember", "hostmember-pw")
    hostile = {"Host": f"127.0.0.1:{trap.port}"}

    # The Member's copy of the sample's RTSTRUCT, saved under a new label with the hostile Host.
    session_uri = f"{url}/data/experiments/{sample.session_id}"
    [roi] = admin.get(f"{session_uri}/assessors",
                      params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
    files = admin.get(f"{session_uri}/assessors/{roi['ID']}/resources/RTSTRUCT/files",
                      params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
    rtstruct = admin.get(f"{url}{files[0]['URI']}").content
    saved = member.put(
        f"{url}/xapi/roi/projects/{project}/sessions/{sample.session_id}/collections/member-copy",
        params={"type": "RTSTRUCT"}, data=rtstruct, headers=hostile,
    )  # fmt: skip
    assert saved.status_code == 200, saved.text

    [job] = wait_for_jobs(admin, url, project, WRAPPER)
    assert job["status"] == "Complete", job
    copy = admin.get(f"{session_uri}/assessors/member-copy/resources/{LABELMAP_RESOURCE}/files",
                     params={"format": "json"})  # fmt: skip
    assert copy.status_code == 200 and copy.json()["ResultSet"]["Result"]

    # A launch of the Member's own, with the same Host: the job is told the server's address.
    launched = member.post(
        f"{url}/xapi/projects/{project}/wrappers/{job['wrapper-id']}/root/roi-collection/launch",
        json={"roi-collection": job["root-uri"]}, headers=hostile,
    )  # fmt: skip
    assert launched.status_code == 200, launched.text
    jobs = wait_for_jobs(admin, url, project, WRAPPER, count=2)
    assert [j["status"] for j in jobs] == ["Complete", "Complete"], jobs

    assert trap.received == []  # nothing ever connected: no launch, no job, no token
    with sqlite3.connect(xnat_server.data_dir / "xnat-ml.sqlite") as db:
        hosts = db.execute("SELECT host FROM cs_containers WHERE project = ?", (project,))
        assert {host for (host,) in hosts} == {xnat_server.url}
