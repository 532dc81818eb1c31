"""The ML dashboard driven by a real browser (Playwright, Debian's chromium): an Owner installs a
model, builds a dataset, stores a config, launches training, watches it, promotes the run and
runs the new version on a session; a Collaborator cannot launch training; an outsider cannot
see the project; and the dashboard keeps working when its server comes back on another port
and when a reverse proxy serves it under /xnat/. Screenshots go to the test's tmp folder
(and to test-artifacts/dashboard/ when XNAT_ML_TEST_ARTIFACTS is set)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
from PIL import Image
from prefix_proxy import PrefixProxy

from xnat_ml.assets import shipped_dir
from xnat_ml.containers.installed import enable_wrapper, find_wrapper, install_command
from xnat_ml.sample import build_sample_project
from xnat_ml.sample.synthetic import SynthRoi, SynthScan, add_session
from xnat_ml.server.process import free_port
from xnat_ml.xnat import connect

sys.path.append(str(Path(__file__).resolve().parents[1] / "training"))
from xnat_project import DEFINITION, _case, tiny_config  # noqa: E402

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip
PROJECT = "DASH1"
OWNER, COLLAB, OUTSIDER = "dash_owner", "dash_collab", "dash_outsider"
PASSWORD = "dash-pw-7"
COMMANDS = ("train", "promote", "infer")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"NO CHROMIUM at {CHROMIUM} (.ci/run installs it)", pytrace=False)
        pytest.skip(f"no chromium at {CHROMIUM}")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def new_page(browser):
    """A page of its own (cookies too); a server-side step such as a model install loads MONAI
    in the server on a busy 2-core machine, so waits are generous."""
    page = browser.new_page()
    page.set_default_timeout(120_000)
    return page


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """`shots(page, name)`: a screenshot kept as a test artefact."""
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    keep = os.environ.get("XNAT_ML_TEST_ARTIFACTS")

    def shot(page, name: str) -> None:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if keep:
            target = Path(keep) / "dashboard"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)

    return shot


@pytest.fixture(scope="module")
def dash_project(xnat_server, tmp_path_factory) -> str:
    """Six labelled 16³ synthetic sessions, the label map, three users and the train, promote
    and infer commands enabled."""
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        session.put(f"/data/projects/{PROJECT}", accepted_status=[200, 201])
        session.put(f"/data/projects/{PROJECT}/resources/ML_MODELS/files/region2MaskValueMap.txt",
                    data=b"Grey Matter=1\nWhite Matter=2\n", query={"overwrite": "true"},
                    headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        rng = np.random.default_rng(0)
        for i in range(6):
            image, label = _case(rng)
            add_session(session, PROJECT, f"S{i}", f"S{i}_MR",
                        [SynthScan("1", "T1w", f"1.2.3.{i}", image)],
                        [SynthRoi(f"R{i}", f"1.2.3.{i}", label)])  # fmt: skip
        for command in COMMANDS:
            if find_wrapper(session, command) is None:
                install_command(session, shipped_dir("command_json") / f"{command}.json")
            enable_wrapper(session, PROJECT, find_wrapper(session, command))
    xnat_server.add_user(OWNER, PASSWORD, PROJECT, "Owner")
    xnat_server.add_user(COLLAB, PASSWORD, PROJECT, "Collaborator")
    xnat_server.add_user(OUTSIDER, PASSWORD)
    return PROJECT


@pytest.fixture(scope="module")
def bundle_zip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dash-bundle")
    return Path(shutil.make_archive(str(folder / "tissues"), "zip",
                                    shipped_dir("training_configs") / "sample-tissues-cpu"))


def definition() -> dict:
    """The training tests' definition, its images matched by a LIKE pattern: the synthetic
    scans are `T1w`, the sample subject's (added later, to infer on) `T1w MPRAGE`."""
    images = {**DEFINITION["criteria"][0]["payload"]["Images"], "SeriesDescription": "T1w%"}
    payload = {**DEFINITION["criteria"][0]["payload"], "Images": images}
    return {**DEFINITION, "criteria": [{"payload": payload}]}


def add_sample_subject(xnat_server) -> threading.Thread:
    """A subject with DICOM (what infer reads) arriving in the background, as a new scan
    would; the synthetic sessions have NIfTI only."""

    def build() -> None:
        with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
            build_sample_project(session, PROJECT, 1)

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    return thread


def log_in(page, base: str, user: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/ml/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#who").count() == 1, page.locator("main").inner_text()


def wait_for_job(page, base: str, command: str, timeout: float = 240) -> str:
    """Reload the jobs page until the newest `command` job ends; its status."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(f"{base}/ml/p/{PROJECT}/jobs?command={command}")
        status = page.locator("#jobs tr[data-job] .status").first.inner_text()
        if status in ("Complete", "Failed", "Failed (Upload)", "Killed"):
            return status
        assert time.monotonic() < deadline, f"{command} job still {status}"
        time.sleep(2)


def job_log_text(page, base: str) -> str:
    page.locator("#jobs tr[data-job] a", has_text="logs").first.click()
    return page.locator("main").inner_text()


def test_owner_runs_the_whole_loop(xnat_server, dash_project, browser, shots, bundle_zip):
    base = xnat_server.url
    start = time.monotonic()

    def step(name: str) -> None:  # where the time goes (shown with -s, or on failure)
        print(f"{time.monotonic() - start:6.1f} s  {name}", flush=True)
    page = new_page(browser)
    log_in(page, base, OWNER)
    assert page.locator("#projects", has_text=PROJECT).count() == 1
    page.click(f"text={PROJECT}")
    shots(page, "01-project")
    step("01-project")

    # install a model (an Owner's right)
    page.click("#models summary")
    page.fill("#models input[name=name]", "tissues")
    page.set_input_files("#models input[name=bundle]", str(bundle_zip))
    page.click("#install-model")
    assert "Model tissues v1" in page.locator("h1").inner_text()
    shots(page, "02-model")
    step("02-model")

    # build a dataset from a definition; the report is a table, the DICOM-only subject excluded
    page.goto(f"{base}/ml/p/{PROJECT}/")
    page.click("#datasets summary")
    page.fill("#datasets input[name=name]", "blobs")
    page.fill("#datasets textarea[name=definition]", json.dumps(definition()))
    page.click("#build-dataset")
    flashes = page.locator(".flash").all_inner_texts()
    assert "Dataset blobs v1" in page.locator("h1").inner_text(), flashes
    assert page.locator("#report table").count() >= 1
    shots(page, "03-dataset")
    step("03-dataset")
    sample_subject = add_sample_subject(xnat_server)

    # a training config, then training launched from the form the launch UI describes
    page.goto(f"{base}/ml/p/{PROJECT}/")
    page.click("#configs summary")
    page.fill("#configs input[name=name]", "tiny")
    page.fill("#configs textarea[name=config]", json.dumps(tiny_config(epochs=3)))
    page.click("#push-config")
    assert "tiny" in page.locator("#configs").inner_text(), page.locator("main").inner_text()
    page.click("#launch-train")
    page.fill("input[name=CONFIG]", "tiny")
    page.fill("input[name=RUN_ID]", "dashrun")
    shots(page, "04-launch-train")
    step("04-launch-train")
    page.click("#launch")
    assert "launched" in page.locator(".flash.ok").inner_text()

    # the run's page follows its status live (state, epoch, ETA change without a reload)
    deadline = time.monotonic() + 240
    while True:
        answer = page.goto(f"{base}/ml/p/{PROJECT}/runs/dashrun")
        if answer.status == 200:
            break
        assert time.monotonic() < deadline, job_log_text(page, base)
        time.sleep(2)
    seen = []
    while True:
        now = tuple(page.locator(f"#{k}").inner_text() for k in ("state", "epoch", "eta"))
        if not seen or seen[-1] != now:
            seen.append(now)
        if now[0] in ("completed", "failed", "nan", "killed"):
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.5)
    shots(page, "05-run")
    step("05-run")
    assert seen[-1][0] == "completed", (seen, job_log_text(page, base))
    assert len(seen) >= 2, seen  # the page changed on its own while the run went on
    assert "xnat-ml runs tensorboard" in page.locator("#tensorboard").inner_text()

    # promote the run: a new version of the model
    page.click("#promote")
    assert page.locator("input[name=RUN]").input_value() == "dashrun"
    page.fill("input[name=NAME]", "tissues")
    page.click("#launch")
    assert wait_for_job(page, base, "promote") == "Complete", job_log_text(page, base)
    page.goto(f"{base}/ml/p/{PROJECT}/models/tissues/v2")
    assert "Model tissues v2" in page.locator("h1").inner_text()
    assert "dashrun" in page.locator("#card").inner_text()
    graph = page.locator("#lineage .lineage-row").first.inner_text()  # this version's own row
    assert "run dashrun" in graph and graph.strip().endswith("model tissues v2"), graph
    shots(page, "06-promoted")
    step("06-promoted")

    # infer with it on the sample subject's session: an AI SEG collection with an overlay
    sample_subject.join(timeout=300)
    page.goto(f"{base}/ml/p/{PROJECT}/")
    row = page.locator("#sessions tr", has_text="sub-01")
    session_label = row.locator("td").first.inner_text()
    row.locator("a", has_text="Infer").click()
    page.fill("input[name=MODEL]", "tissues:2")
    page.click("#launch")
    assert wait_for_job(page, base, "infer") == "Complete", job_log_text(page, base)
    page.goto(f"{base}/ml/p/{PROJECT}/")
    page.locator("#sessions a", has_text=session_label).click()
    ai = page.locator("#collections tr", has_text="AI_tissues_v2")
    assert ai.count() == 1 and "SEG" in ai.inner_text()
    image = ai.locator("img")
    image.scroll_into_view_if_needed()
    loaded = "img => img.complete && img.naturalWidth > 0"
    page.wait_for_function(loaded, arg=image.element_handle())
    # the session has DICOM only (no NIfTI): the scan under the labels is read from its series
    png = page.request.get(urljoin(page.url, image.get_attribute("src"))).body()
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2]) & (rgb[..., 0] > 0)
    assert grey.sum() > 0.05 * grey.size, "no image drawn under the labels"
    shots(page, "07-session")
    step("07-session")
    page.close()


def test_a_rebuilt_dataset_shows_what_changed(xnat_server, dash_project, browser, shots):
    """A dataset built from the form, a newly labelled session, the same definition built again:
    the second version's page lists that session as new, and only it (subjects placed before
    keep their split)."""
    page = new_page(browser)
    log_in(page, xnat_server.url, OWNER)
    built = []
    for _ in range(2):
        page.goto(f"{xnat_server.url}/ml/p/{PROJECT}/")
        page.click("#datasets summary")
        page.fill("#datasets input[name=name]", "grown")
        page.fill("#datasets textarea[name=definition]", json.dumps(definition()))
        page.click("#build-dataset")
        built.append(page.locator("h1").inner_text())
        if len(built) == 1:
            with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
                image, label = _case(np.random.default_rng(1))
                add_session(session, PROJECT, "S9", "S9_MR",
                            [SynthScan("1", "T1w", "1.2.3.9", image)],
                            [SynthRoi("R9", "1.2.3.9", label)])  # fmt: skip
    assert built == ["Dataset grown v1", "Dataset grown v2"], page.locator("main").inner_text()
    assert "Changes since v1" in page.locator("#changes h2").inner_text()
    rows = [r.locator("td").all_inner_texts() for r in page.locator("#changes tr:has(td)").all()]
    assert len(rows) == 1 and "S9" in rows[0][1] and rows[0][2] == "not in", rows
    assert rows[0][3] in ("training", "validation"), rows
    shots(page, "08-dataset-changes")
    page.close()


def test_collaborator_cannot_launch_training(xnat_server, dash_project, browser, shots):
    base = xnat_server.url
    page = new_page(browser)
    log_in(page, base, COLLAB)
    page.goto(f"{base}/ml/p/{PROJECT}/")
    assert page.locator("#launch-train").count() == 0  # no button for what the role lacks
    assert page.locator("#install-model").count() == 0
    page.goto(f"{base}/ml/p/{PROJECT}/launch/train")
    assert page.locator("#launch").count() == 0
    assert "needs a stronger role" in page.locator("main").inner_text()
    # posting the form anyway (its CSRF token is on the page) is refused with one line
    token = page.locator("input[name=csrf_token]").first.input_value()
    answer = page.request.post(f"{base}/ml/p/{PROJECT}/launch/train",
                                form={"csrf_token": token, "CONFIG": "tiny"})  # fmt: skip
    assert "needs the Member role" in answer.text()
    shots(page, "08-collaborator")
    jobs = xnat_server.session().get(f"{base}/xapi/containers", params={"project": PROJECT})
    assert not [j for j in jobs.json() if j["user-id"] == COLLAB]
    page.close()


def test_outsider_cannot_see_the_project(xnat_server, dash_project, browser, shots):
    base = xnat_server.url
    page = new_page(browser)
    log_in(page, base, OUTSIDER)
    assert page.locator("#projects", has_text=PROJECT).count() == 0
    page.goto(f"{base}/ml/p/{PROJECT}/")
    assert "not a member" in page.locator(".flash.error").inner_text()
    assert page.locator("#models").count() == 0
    shots(page, "09-outsider")
    page.close()
    # and nobody sees a page without logging in, nor posts without the form's token
    anonymous = new_page(browser)
    anonymous.goto(f"{base}/ml/p/{PROJECT}/jobs")
    assert "/ml/login" in anonymous.url
    assert anonymous.request.post(f"{base}/ml/logout", max_redirects=0).status == 302
    anonymous.close()


def test_another_port_and_a_path_prefix(start_xnat_server, browser, shots, tmp_path):
    """The embedded dashboard after its server came back on another port, through a reverse
    proxy at /xnat/, and `xnat-ml dashboard` for that XNAT as the proxy serves it."""
    server = start_xnat_server("dash-moved")
    server.session().put(f"{server.url}/data/projects/MOVED").raise_for_status()
    page = new_page(browser)
    log_in(page, server.url, "admin", "admin")
    first = server.port
    server.stop()
    server.port = free_port()
    server.start()
    assert server.port != first
    page.goto(f"{server.url}/ml/")  # logged in still: the key is kept in the data folder
    page.click("text=MOVED")
    assert page.locator("h1").inner_text() == "MOVED"
    page.close()

    with PrefixProxy(server.url) as proxy:
        page = new_page(browser)
        page.goto(f"{proxy.url}/ml/")
        assert page.url.startswith(f"{proxy.url}/ml/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", "admin")
        page.click("button[type=submit]")
        page.click("text=MOVED")
        assert page.url == f"{proxy.url}/ml/p/MOVED/"
        assert page.evaluate("getComputedStyle(document.body).fontFamily")  # CSS came through
        shots(page, "10-behind-proxy")
        page.close()

        port = free_port()
        standalone = subprocess.Popen(
            [sys.executable, "-m", "xnat_ml", "dashboard", "--xnat", proxy.url, "--port",
             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            assert re.search(r"ML dashboard for .* at http", standalone.stdout.readline())
            page = new_page(browser)
            log_in(page, f"http://127.0.0.1:{port}", "admin", "admin")
            assert page.locator("#projects", has_text="MOVED").count() == 1
            shots(page, "11-standalone")
            page.close()
        finally:
            standalone.terminate()
            standalone.wait(timeout=15)
