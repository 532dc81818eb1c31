"""container_images/xnat-ml built by a real dockerd, then run as the shipped commands' image.

The build runs without network, from the wheels `make wheelhouse` fetched at install time, on
Debian bookworm with Debian's own python3 (imported from the test root file system: no registry
is reachable). The jobs then run the shipped command JSONs as they are, on that image alone: no
bind mounts, so nothing of this checkout or its venv can stand in for what the image lacks.
"""

from __future__ import annotations

import json

import e2e
import nibabel as nib
import numpy as np
import pytest

from xnat_ml.imaging.series import load_series
from xnat_ml.layout import DICOM_RESOURCE, NIFTI_RESOURCE
from xnat_ml.xnat import connect, download_resource

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROJECT = "IMAGE_E2E"


def run_in_image(image, dockerd, script: str) -> str:
    """Run `script` with /bin/sh in a network-less container of the image; its output."""
    output = dockerd.client().containers.run(
        image.id, ["/bin/sh", "-c", script], network_mode="none", remove=True, stderr=True
    )
    return output.decode()


def test_image_carries_its_commands_for_xnat(image):
    """XNAT's Container Service installs the commands in an added image's org.nrg.commands."""
    carried = json.loads(image.labels["org.nrg.commands"])
    files = sorted((e2e.REPO / "command_json").glob("*.json"))
    shipped = [json.loads(p.read_text()) for p in files]
    assert carried == shipped and [c["image"] for c in carried] == [e2e.IMAGE] * len(shipped)


def test_image_holds_xnat_ml_its_commands_and_cpu_torch(image, dockerd):
    lines = run_in_image(
        image,
        dockerd,
        "command -v xnat-ml; xnat-ml --version;"
        " python3 -c 'import torch; print(torch.__version__)';"
        " share=$(python3 -c 'import xnat_ml.assets as a; print(a.shipped_dir(\"command_json\"))');"
        " echo $share; xnat-ml commands validate --quiet $share/*.json && echo VALID;"
        " ls /tmp/wheels /tmp/src 2>&1 | head -2",
    ).splitlines()  # fmt: skip
    assert lines[0] == "/opt/xnat-ml/bin/xnat-ml", lines
    assert lines[1] == "xnat-ml 0.1.0", lines
    assert lines[2] == "2.13.0+cpu", lines
    assert lines[3] == "/opt/xnat-ml/share/xnat-ml/command_json", lines
    assert "VALID" in lines
    # The build stage's wheels and source tree stay out of the image.
    assert all("No such file" in line for line in lines[-2:]), lines


def test_image_holds_the_training_stack_and_templates(image, dockerd):
    """`train` needs MONAI, ignite, TensorBoard and matplotlib (curves) in the image, and `xnat-ml
    config templates` the shipped training configs (share/xnat-ml/training_configs)."""
    lines = run_in_image(
        image,
        dockerd,
        "python3 -c 'import monai, ignite, tensorboard, matplotlib;"
        " print(monai.__version__, ignite.__version__, tensorboard.__version__)';"
        " xnat-ml config templates",
    ).splitlines()  # fmt: skip
    for wheel, version in zip(("monai", "pytorch_ignite", "tensorboard"), lines[0].split(),
                              strict=True):  # fmt: skip
        assert list(e2e.WHEELS.glob(f"{wheel}-{version}-*.whl")), (wheel, version, lines)
    share = "/opt/xnat-ml/share/xnat-ml/training_configs"
    assert f"sample-tissues-cpu: config {share}/sample-tissues-cpu.json, model {share}/" \
        "sample-tissues-cpu" in lines, lines  # fmt: skip


def test_a_base_image_with_its_own_torch_keeps_it(dockerd):
    """The GPU build: `--build-arg BASE_IMAGE=<an image whose python3 has a CUDA torch>`. The
    same Dockerfile on a stand-in base (CPU torch in Debian python's site-packages) installs no
    torch of its own, and the image's xnat-ml trains with the base's."""
    client = dockerd.client()
    base = e2e.build_torch_base(dockerd, "xnat-ml-test:torch-base")
    try:
        built = e2e.build_image(dockerd, base=base, tag="xnat-ml-test:on-torch-base")
        assert "torch 2.13.0+cpu from the base image" in built.build_log
        lines = run_in_image(
            built, dockerd,
            "python3 -c 'import torch, monai, ignite; print(torch.__file__)';"
            " ls /opt/xnat-ml/lib/python3*/site-packages | grep -ci '^torch' || true",
        ).splitlines()  # fmt: skip
        assert lines[0].startswith("/usr/local/lib/python3") and "/opt/xnat-ml" not in lines[0]
        assert lines[-1] == "0", lines  # no second torch in the venv
    finally:
        for tag in ("xnat-ml-test:on-torch-base", "xnat-ml-test:torch-base"):
            client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def server(image, dockerd, start_xnat_server):
    """A server whose Docker backend runs jobs in the built image, with no bind mounts."""
    e2e.tag_as_commands_image(dockerd, image)
    options = {"docker_url": dockerd.url, "docker_network": "host"}
    return e2e.start_backend_server(start_xnat_server, "xnat-image", "docker", options, {})


@pytest.fixture(scope="module")
def site(server):
    return e2e.build_site(server, PROJECT)


def test_saving_an_rtstruct_runs_roi_to_mask_in_the_image(server, site):
    e2e.assert_roi_collection_became_masks(server, PROJECT, site)


def test_dicom_to_nifti_in_the_image_matches_the_host(server, site, tmp_path):
    http = server.session()
    command = json.loads((e2e.REPO / "command_json/dicom-to-nifti.json").read_text())
    wrapper = e2e.install_enabled(server, PROJECT, command)["dicom-to-nifti-scan"]
    session_uri = f"/data/experiments/{site.session_id}"
    scans = http.get(f"{server.url}{session_uri}/scans", params={"format": "json"}).json()
    # A scan roi-to-mask left alone, so the NIfTI checked here is this command's.
    scan = next(
        row["ID"]
        for row in scans["ResultSet"]["Result"]
        if NIFTI_RESOURCE not in e2e.resources(server, f"{session_uri}/scans/{row['ID']}")
    )
    launch = f"{server.url}/xapi/projects/{PROJECT}/wrappers/{wrapper}/root/scan/launch"
    scan_path = f"/archive/experiments/{site.session_id}/scans/{scan}"
    answer = http.post(launch, json={"scan": scan_path})
    assert answer.status_code == 200, answer.text
    job = e2e.wait_job(server, answer.json()["id"], timeout=300)
    assert job["status"] == "Complete", job
    scan_uri = f"{session_uri}/scans/{scan}/resources"
    with connect(server.url, server.user, server.password) as session:
        [made] = download_resource(session, f"{scan_uri}/{NIFTI_RESOURCE}", tmp_path / "nifti")
        download_resource(session, f"{scan_uri}/{DICOM_RESOURCE}", tmp_path / "dicom")
    expected = load_series(tmp_path / "dicom")
    image = nib.load(made)
    np.testing.assert_allclose(image.affine, expected.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected.load_pixels())
