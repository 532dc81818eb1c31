"""Site and membership behaviour as XNAT >= 1.7 has it, checked with unmodified pyxnat:
`/data/version` is gone (clients fall back to buildInfo), a project's last Owner may leave."""

from __future__ import annotations

import logging

import pyxnat

OWNER, OWNER_PASSWORD = "fidelity_owner", "fidelity-owner-pw"


def _pyxnat(server, user=None, password=None) -> pyxnat.Interface:
    logging.getLogger("pyxnat").setLevel(logging.ERROR)
    return pyxnat.Interface(
        server=server.url, user=user or server.user, password=password or server.password
    )


def test_pyxnat_version_falls_back_to_build_info(xnat_server):
    assert xnat_server.session().get(f"{xnat_server.url}/data/version").status_code == 404
    assert _pyxnat(xnat_server).version()["version"].startswith("1.8")


def test_the_last_owner_may_leave_and_the_admin_still_manages(xnat_server, project):
    xnat_server.add_user(OWNER, OWNER_PASSWORD, project, "Owner")
    admin = xnat_server.session()
    url = f"{xnat_server.url}/data/projects/{project}/users/Owners"
    assert admin.delete(f"{url}/admin").status_code == 200  # one Owner left
    owner = xnat_server.session(OWNER, OWNER_PASSWORD)
    assert owner.delete(f"{url}/{OWNER}").status_code == 200  # the last one leaves
    assert owner.get(f"{xnat_server.url}/data/projects/{project}").status_code == 403
    users = admin.get(f"{xnat_server.url}/data/projects/{project}/users").json()
    assert users["ResultSet"]["Result"] == []
    assert admin.put(f"{url}/admin").status_code == 200  # a site admin still manages it
