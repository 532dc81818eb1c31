"""A project of many tiny DICOM sessions for `xnat-ml batch run --command infer`, one of them
lacking its T1w series, and the whole flow a user follows: run, see the one failure and why, fix
it, rerun the failure, every session with exactly one AI collection. Shared by the local-backend
batch of 50 (tests/inference/test_batch_infer.py) and the Slurm batch of 5
(tests/containers/test_batch_infer_slurm.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from inference.inference_models import tissues_model_with_lineage
from server.dicom_samples import write_series, zip_folder

from xnat_ml.cli import main
from xnat_ml.imaging.ai_collections import ai_collection_label
from xnat_ml.layout import ROI_COLLECTION_XSI
from xnat_ml.training.project_models import install_model
from xnat_ml.xnat import connect

REPO = Path(__file__).resolve().parents[2]
MEMBER_PASSWORD = "member-pw"
Cli = Callable[..., tuple[int, str]]  # (*args) -> (exit code, stdout + stderr)


def import_series(
    http, url: str, project: str, label: str, tmp: Path, description: str, number: int,
    study_uid: str | None = None, overwrite: str = "none",
) -> str:  # fmt: skip
    """One DICOM series (16×16×6) imported into session `label` (subject of the same label);
    its study UID."""
    folder = tmp / f"{label}-{number}"
    series = write_series(folder, patient=label, study_uid=study_uid, number=number,
                          description=description, slices=6, size=16)  # fmt: skip
    answer = http.post(f"{url}/data/services/import", data=zip_folder(folder), params={
        "import-handler": "DICOM-zip", "overwrite": overwrite,
        "dest": f"/archive/projects/{project}/subjects/{label}/experiments/{label}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return series["study_uid"]


class BatchSite:
    """Project `project`: sessions `labels` (one T1w series each; `broken` a T2w one instead),
    the tissues model v1 with its lineage, the infer command installed and enabled, and a
    Member `member` (password MEMBER_PASSWORD) who runs the batch."""

    def __init__(self, server, project: str, labels: list[str], broken: str, member: str,
                 work: Path) -> None:  # fmt: skip
        self.server, self.project, self.labels = server, project, labels
        self.broken, self.member, self.work = broken, member, work
        url, http = server.url, server.session()
        http.put(f"{url}/data/projects/{project}").raise_for_status()
        server.add_user(member, MEMBER_PASSWORD, project, "Member")
        self.studies = {label: import_series(http, url, project, label, work,
                                             "T2w" if label == broken else "T1w", 1)
                        for label in labels}  # fmt: skip
        with connect(url, server.user, server.password) as session:
            model = tissues_model_with_lineage(session, project, work / "model")
            assert install_model(session, project, model, "tissues")[0] == 1
        command = json.loads((REPO / "command_json" / "infer.json").read_text())
        answer = http.post(f"{url}/xapi/commands", json=command)
        assert answer.status_code in (201, 409), answer.text
        query = {"name": "infer", "version": command["version"]}
        [listed] = http.get(f"{url}/xapi/commands", params=query).json()
        wrapper = {w["name"]: w["id"] for w in listed["xnat"]}["infer-session"]
        for scope in ("", f"/projects/{project}"):
            http.put(f"{url}/xapi{scope}/wrappers/{wrapper}/enabled").raise_for_status()

    def cli(self, capsys) -> Cli:
        """`xnat-ml ARGS` as the Member, in this process (real HTTP); output via capsys."""

        def run(*args: str) -> tuple[int, str]:
            capsys.readouterr()
            code = main([*args, "--url", self.server.url, "--user", self.member,
                         "--password", MEMBER_PASSWORD])  # fmt: skip
            captured = capsys.readouterr()
            return code, captured.out + captured.err

        return run


def status_lines(output: str) -> dict[str, str]:
    return dict(re.findall(r"^  (\S+): (.*)$", output, re.MULTILINE))


def run_fix_and_rerun(site: BatchSite, cli: Cli) -> None:
    """The user's flow, asserted step by step (see the module's docstring)."""
    project, count = site.project, len(site.labels)
    code, out = cli("batch", "run", "--project", project, "--command", "infer",
                    "--input", "MODEL=tissues:1")  # fmt: skip
    assert code == 0, out
    found = re.search(rf"^batch (\S+): {count} launched, 0 refused", out, re.MULTILINE)
    assert found, out
    batch = found.group(1)

    code, out = cli("batch", "status", batch, "--project", project, "--wait", "--interval", "1")
    assert code == 1, out
    assert f"batch {batch}: {count - 1} Complete, 1 Failed" in out, out
    lines = status_lines(out)
    assert set(lines) == set(site.labels), out
    assert re.fullmatch(r"job \d+ Failed: xnat-ml: error: session \S+: no scan for input "
                        r"channel T1w \(SeriesDescription /\^T1w/\)", lines[site.broken]), out

    # The cause fixed (the session's T1w series imported); then only the failure runs again.
    http = site.server.session(site.member, MEMBER_PASSWORD)
    import_series(http, site.server.url, project, site.broken, site.work, "T1w", 2,
                  site.studies[site.broken], "append")  # fmt: skip
    code, out = cli("batch", "rerun", batch, "--failed", "--project", project)
    assert code == 0, out
    assert f"batch {batch}: 1 launched, 0 refused" in out and f"  {site.broken}: job " in out, out
    code, out = cli("batch", "status", batch, "--project", project, "--wait", "--interval", "1")
    assert code == 0, out
    assert f"batch {batch}: {count} Complete" in out, out

    rows = http.get(f"{site.server.url}/data/experiments", params={
        "project": project, "xsiType": ROI_COLLECTION_XSI, "format": "json",
        "columns": "ID,label"}).json()["ResultSet"]["Result"]  # fmt: skip
    labels = sorted(r["label"] for r in rows)
    assert labels == sorted(ai_collection_label("tissues", 1, s) for s in site.labels), labels
