"""Command resolution on a small in-memory archive: inputs, derived inputs, command lines.

The archive client is replaced by a fake serving objects in the Container Service's JSON shape,
so these tests pin the resolution rules themselves (the end-to-end tests cover the REST side).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_data import XNAT_COMMANDS, require

from xnat_ml.containers.archive import ArchiveClient
from xnat_ml.containers.command import load_command
from xnat_ml.containers.resolve import (
    InputError,
    check_inputs,
    check_object_type,
    object_uri,
    resolve,
)
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.uris import parse_path

SHARED = XNAT_COMMANDS
REPO = Path(__file__).resolve().parents[2]


def _resource(parent: str, label: str, files: list[str] = ()) -> dict:
    uri = f"{parent}/resources/{label}"
    listing = [{"name": f, "path": f, "uri": f"{uri}/files/{f}"} for f in files]
    return {"id": label, "label": label, "xsiType": "xnat:resourceCatalog", "uri": uri,
            "files": listing}  # fmt: skip


def _scan(sid: str, scan_type: str, uid: str, labels: list[str]) -> dict:
    uri = f"/archive/experiments/E1/scans/{sid}"
    return {"id": sid, "label": sid, "xsiType": "xnat:mrScanData", "uri": uri, "uid": uid,
            "scan-type": scan_type, "integer-id": int(sid), "session-id": "E1",
            "resources": [_resource(uri, lab, ["a.dcm"]) for lab in labels]}  # fmt: skip


class FakeArchive(ArchiveClient):
    def __init__(self) -> None:
        assessor_uri = "/archive/experiments/E1/assessors/A1"
        self.session = {
            "id": "E1", "label": "sess 1", "xsiType": "xnat:mrSessionData",
            "uri": "/archive/experiments/E1", "project-id": "P1", "subject-id": "S1",
            "scans": [
                _scan("1", "T1w", "1.2.3.1", ["DICOM"]),
                _scan("2", "T2w", "1.2.3.2", ["DICOM", "NIFTI"]),
                _scan("3", "RTSTRUCT", "1.2.3.3", ["secondary"]),
            ],
            "assessors": [{
                "id": "A1", "label": "roi1", "xsiType": "icr:roiCollectionData",
                "uri": assessor_uri, "session-id": "E1", "project-id": "P1",
                "resources": [_resource(assessor_uri, "RTSTRUCT", ["rt.dcm"])],
            }],
            "resources": [],
        }  # fmt: skip
        self.project = {
            "id": "P1",
            "label": "P1",
            "xsiType": "xnat:projectData",
            "uri": "/archive/projects/P1",
            "resources": [
                _resource("/archive/projects/P1", "ML_MODELS", ["m.txt"]),
                _resource("/archive/projects/P1", "ML_DATASETS", ["definitions/dataset.json"]),
            ],
        }
        self.subject = {
            "id": "S1",
            "label": "subj",
            "xsiType": "xnat:subjectData",
            "uri": "/archive/subjects/S1",
            "project-id": "P1",
            "resources": [],
        }
        self.asset = {
            "id": "PA1",
            "label": "asset",
            "xsiType": "xnat:abstractProjectAsset",
            "uri": "/archive/experiments/PA1",
            "project-id": "P1",
            "resources": [],
        }
        # fmt: skip

    def load(self, kind: str, uri: str, children: bool = True) -> dict:
        if kind == "Project":
            return self.project
        if kind == "Subject":
            return self.subject
        if kind == "ProjectAsset":
            return self.asset
        if kind == "Session":
            return self.session
        if kind == "Scan":
            return next(s for s in self.session["scans"] if s["id"] == parse_path(uri).steps[-1][1])
        if kind == "Assessor":
            return self.session["assessors"][0]
        if kind == "Resource":  # a scan's, as the Event Service's ResourceEvent hands it over
            holder, _, label = uri.partition("/resources/")
            scan = self.load("Scan", holder)
            [found] = [r for r in scan["resources"] if r["label"] == label]
            return dict(found, **{"parent-uri": holder})
        raise AssertionError(kind)

    def sessions(self, project_id: str, subject_id: str | None = None) -> list[dict]:
        return [self.session]

    def subjects(self, project_id: str) -> list[dict]:
        return [self.subject]


ROOTS = {
    "Project": "/archive/projects/P1",
    "ProjectAsset": "/archive/experiments/PA1",
    "Subject": "/archive/subjects/S1",
    "Session": "/archive/experiments/E1",
    "Scan": "/archive/experiments/E1/scans/2",
    "Assessor": "/archive/experiments/E1/assessors/A1",
    "Resource": "/archive/experiments/E1/scans/2/resources/DICOM",
}


def _wrappers():
    files = sorted(SHARED.glob("*.json")) + sorted((REPO / "command_json").glob("*.json"))
    for path in files:
        command = load_command(path.read_bytes())
        for wrapper in command.xnat:
            yield pytest.param(command, wrapper, id=f"{path.name}:{wrapper.name}")


def test_scan_and_session_derived_up_from_a_scan_resource():
    """infer-dicom-resource: the DICOM resource's scan and its session, read up the hierarchy."""
    command = load_command((REPO / "command_json" / "infer.json").read_bytes())
    [wrapper] = [w for w in command.xnat if w.name == "infer-dicom-resource"]
    resolution = resolve(command, wrapper, {"resource": ROOTS["Resource"], "MODEL": "m:1"},
                         FakeArchive())  # fmt: skip
    assert "--project P1 --session E1 " in resolution.command_line
    assert resolution.command_line.endswith("--trigger-scan 2")


@pytest.mark.parametrize(("command", "wrapper"), list(_wrappers()))
def test_every_wrapper_resolves(command, wrapper):
    root = wrapper.external_inputs[0]
    values = {root.name: ROOTS[root.type]}
    if root.type == "Scan" and "RTSTRUCT" in (wrapper.description or "") + wrapper.name.upper():
        values[root.name] = "/archive/experiments/E1/scans/3"
    if command.name == "debug":
        values["command"] = "echo hi"
    # what a user types at launch: required command inputs that no wrapper input feeds
    fed = {inp.provides_value_for_command_input
           for inp in [*wrapper.external_inputs, *wrapper.derived_inputs]}  # fmt: skip
    for inp in command.inputs:
        if inp.required and inp.default_value is None and inp.name not in fed:
            values.setdefault(inp.name, "r1")
    resolution = resolve(command, wrapper, values, FakeArchive())
    assert "#" not in resolution.command_line.replace("#!", "")
    for out in resolution.outputs:
        assert out.parent.startswith(("/archive/", "handler:"))


def _shared(name: str):
    return load_command(require(SHARED / name).read_bytes())


def test_dcm2niix_command_line_flags_and_booleans():
    command = _shared("dcm2niix.command.json")
    wrapper = command.xnat[0]
    scan = ROOTS["Scan"]
    line = resolve(command, wrapper, {"scan": scan}, FakeArchive()).command_line
    assert line == "dcm2niix -b n  -o /output /input"
    values = {"scan": scan, "bids": True, "other-options": "-z y"}
    line = resolve(command, wrapper, values, FakeArchive()).command_line
    assert line == "dcm2niix -b y '-z y' -o /output /input"  # a value is one word by default
    line = resolve(
        command, wrapper, values, FakeArchive(), raw_inputs=["other-options"]
    ).command_line
    assert line == "dcm2niix -b y -z y -o /output /input"  # the admin chose: several words
    resolution = resolve(command, wrapper, {"scan": scan}, FakeArchive())
    assert resolution.mounts[0].sources == [("resource", f"{scan}/resources/DICOM")]
    assert resolution.outputs[0].parent == scan and resolution.outputs[0].label == "NIFTI"


def test_scan_matcher_rejects_a_scan_without_dicom():
    command = _shared("dcm2niix.command.json")
    with pytest.raises(InputError, match="'scan'.*does not match"):
        resolve(command, command.xnat[0], {"scan": "/archive/experiments/E1/scans/3"},
                FakeArchive())  # fmt: skip


def _multi(delimiter: str, flag: str = "--scan", sep: str = "=") -> dict:
    return {
        "name": "sample-multi", "version": "1", "schema-version": "1.0", "image": "busybox:1",
        "command-line": 'echo SCAN_IDS value is "#SCAN_IDS#"',
        "inputs": [{"name": "SCAN_IDS", "type": "string", "required": True,
                    "command-line-flag": flag, "command-line-separator": sep,
                    "multiple-delimiter": delimiter}],
        "xnat": [{"name": "w", "contexts": ["xnat:imageSessionData"],
                  "external-inputs": [{"name": "session", "type": "Session"}],
                  "derived-inputs": [{"name": "scan", "type": "Scan", "multiple": True,
                                      "matcher": "'DICOM' in @.resources[*].label",
                                      "derived-from-wrapper-input": "session",
                                      "derived-from-xnat-object-property": "id",
                                      "provides-value-for-command-input": "SCAN_IDS"}]}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("delimiter", "flag", "expected"),
    [
        ("flag", "--scan", "--scan=1 --scan=2"),
        ("comma", "--scan", "--scan=1,2"),
        ("space", "", "1 2"),
        ("quoted-space", "", "1 2"),  # one word: inside "..." no quote marks are added
    ],
)
def test_multiple_values_and_delimiters(delimiter, flag, expected):
    command = load_command(json.dumps(_multi(delimiter, flag)))
    line = resolve(command, command.xnat[0], {"session": "E1"}, FakeArchive()).command_line
    assert line == f'echo SCAN_IDS value is "{expected}"'


def test_ambiguous_derived_input_names_the_input():
    data = _multi("space")
    derived = data["xnat"][0]["derived-inputs"][0]
    derived.pop("multiple")
    command = load_command(json.dumps(data))
    with pytest.raises(InputError, match="input 'scan': 2 Scan objects .* match"):
        resolve(command, command.xnat[0], {"session": "E1"}, FakeArchive())
    # the user may pick one
    line = resolve(command, command.xnat[0], {"session": "E1", "scan": "2"}, FakeArchive())
    assert line.command_line == 'echo SCAN_IDS value is "--scan=2"'


def test_roi_to_mask_needs_only_properties_every_xnat_has():
    """No scan is resolved: the command finds it by the series UID inside the ROI file, so a
    session with several DICOM scans resolves as on a real XNAT."""
    command = load_command((REPO / "command_json/roi-to-mask.json").read_bytes())
    resolution = resolve(command, command.xnat[0], {"roi-collection": ROOTS["Assessor"]},
                         FakeArchive())  # fmt: skip
    assert [(m.name, m.sources) for m in resolution.mounts if m.sources] == [
        ("roi", [("resource", "/archive/experiments/E1/assessors/A1/resources/RTSTRUCT")])
    ]
    assert resolution.command_line == (
        "xnat-ml roi-to-mask /roi --type RTSTRUCT --session E1 --project P1 "
        "--labelmap 'region2MaskValueMap.txt' --out /output/labels"
    )
    parents = {o.handler.name: (o.parent, o.label) for o in resolution.outputs}
    assert parents == {"label-map": ("/archive/experiments/E1/assessors/A1", "LABELMAP")}


def test_check_inputs_rejects_bad_values():
    command = load_command(json.dumps(_multi("space")))
    wrapper = command.xnat[0]
    with pytest.raises(InputError, match="'session': required Session input is missing"):
        check_inputs(command, wrapper, {})
    with pytest.raises(InputError, match="'nope': not an input"):
        check_inputs(command, wrapper, {"session": "E1", "nope": 1})
    with pytest.raises(InputError, match="'session': expected a single"):
        check_inputs(command, wrapper, {"session": {"a": 1}})
    with pytest.raises(InputError, match="longer than"):
        check_inputs(command, wrapper, {"session": "x" * 20_000})
    with pytest.raises(InputError, match="parameters must be a JSON object"):
        check_inputs(command, wrapper, ["E1"])


def test_archive_values_stay_one_shell_word():
    command = _shared("rt-struct-assessor.command.json")
    archive = FakeArchive()
    archive.session["label"] = "sess 1; rm -rf ~"
    line = resolve(command, command.xnat[0], {"scan": "/archive/experiments/E1/scans/2"},
                   archive).command_line  # fmt: skip
    assert "S1 E1 'sess 1; rm -rf ~' P1 /input/a.dcm" in line


def test_output_files_never_leave_their_mount(tmp_path: Path):
    from xnat_ml.containers.launch import UploadError, _matched_files
    from xnat_ml.containers.resolve import ResolvedOutput

    command = load_command((REPO / "command_json/dicom-to-nifti.json").read_bytes())
    mount = tmp_path / "out"
    (mount / "sub").mkdir(parents=True)
    (mount / "a.nii.gz").write_bytes(b"x")
    (mount / "sub" / "b.nii.gz").write_bytes(b"y")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "c.nii.gz").write_bytes(b"z")
    (mount / "link.nii.gz").symlink_to(secret / "c.nii.gz")
    (mount / "linked-dir").symlink_to(secret)

    def output(path: str, glob: str | None) -> ResolvedOutput:
        return ResolvedOutput(command.xnat[0].output_handlers[0], command.outputs[0], "nifti-out",
                              path, glob, "/archive/x", "NIFTI")  # fmt: skip

    found = _matched_files(mount, output("", "*.nii.gz"))
    assert sorted(p.relative_to(mount).as_posix() for p in found) == ["a.nii.gz", "sub/b.nii.gz"]
    with pytest.raises(UploadError, match="leaves its mount"):
        _matched_files(mount, output("../secret", None))
    with pytest.raises(UploadError, match="leaves its mount"):
        _matched_files(mount, output("linked-dir", None))


@pytest.mark.parametrize(
    ("kind", "value", "problem"),
    [
        ("Session", "/archive/experiments/E1/scans/1", "URI of a Scan, not of a Session"),
        ("Session", "/archive/projects/P", "URI of a Project, not of a Session"),
        ("Scan", "/archive/experiments/E1", "URI of an Experiment, not of a Scan"),
        ("Assessor", "/archive/experiments/E1/scans/1", "URI of a Scan, not of an Assessor"),
        ("Subject", "/archive/experiments/E1", "not of a Subject"),
        ("Project", "/archive/subjects/S1", "not of a Project"),
        ("Resource", "/archive/experiments/E1/resources/R/files/a", "URI of a File"),
        ("Scan", "1", "not the URI of a Scan"),
        ("Session", "E1/scans/1", "not the URI of a Session"),
        ("Session", "/archive/nothing/here", "not an XNAT object URI"),
    ],
)
def test_object_inputs_refuse_uris_of_another_kind(kind, value, problem):
    with pytest.raises(InputError, match=f"input 'x': .*{problem}"):
        object_uri("x", kind, value)


def test_object_inputs_accept_their_own_kind_and_check_the_real_type():
    assert object_uri("x", "Session", "E1") == "/experiments/E1"
    assert object_uri("x", "Project", "P") == "/projects/P"
    assert object_uri("x", "Scan", "/data/experiments/E1/scans/2") == "/data/experiments/E1/scans/2"
    assert object_uri("x", "Resource", "/archive/experiments/E1/resources/NIFTI")
    check_object_type("x", "Session", "xnat:mrSessionData")
    check_object_type("x", "SubjectAssessor", "xnat:ctSessionData")
    check_object_type("x", "Session", "site:ownData")  # unknown types are the matcher's business
    wrong = (("Session", "icr:roiCollectionData"), ("Scan", "xnat:mrSessionData"),
             ("Assessor", "xnat:ctScanData"), ("Project", "xnat:subjectData"))  # fmt: skip
    for kind, xsi in wrong:
        with pytest.raises(InputError, match=f"input 'x': .*not an? {kind}"):
            check_object_type("x", kind, xsi)


def test_objects_of_another_project_are_refused():
    """The worker's own check (the server checks at launch too): a job filed under P2 never
    resolves, and so never stages, P1's session."""
    command = load_command(json.dumps({
        "name": "p", "version": "1", "type": "docker", "image": "x", "command-line": "echo",
        "xnat": [{"name": "p-session", "contexts": ["xnat:imageSessionData"],
                  "external-inputs": [{"name": "session", "type": "Session", "required": True}]}],
    }))  # fmt: skip
    wrapper = command.xnat[0]
    root = {"session": ROOTS["Session"]}
    assert resolve(command, wrapper, root, FakeArchive(), "P1").root_uri == ROOTS["Session"]
    with pytest.raises(InputError, match=r"'session'.*belongs to project 'P1', not to 'P2'"):
        resolve(command, wrapper, root, FakeArchive(), "P2")


# ---------------------------------------------------------------- values stay literal

HOSTILE = [
    "x'; touch MARK; echo '", "$(touch MARK)", "`touch MARK`", "a; touch MARK", "a | touch MARK",
    "a && touch MARK", "*", "~", "~/x", "line\ntouch MARK", '"; touch MARK; echo "', "\\",
    "$HOME", "a\\", "it's", "--flag with  spaces ", "-",
]  # fmt: skip
ARGV = "printf '%s\\0'"  # each argument, NUL-terminated


def _argv_of(line: str, marker: Path) -> list[str]:
    """Run a resolved command line as every backend does (/bin/sh -c); its program's argv."""
    import subprocess

    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, timeout=30,
                          cwd=marker.parent)  # fmt: skip
    assert done.returncode == 0, (line, done.stderr)
    assert not marker.exists(), f"{line!r} ran a command on the host"
    return done.stdout.split("\0")[:-1]


def _string_command(line: str, **spec) -> dict:
    inputs = [{"name": "V", "type": "string", "replacement-key": "#V#", **spec}]
    return {"name": "lit", "version": "1", "schema-version": "1.0", "image": "busybox:1",
            "command-line": line, "inputs": inputs,
            "xnat": [{"name": "w", "contexts": ["xnat:imageSessionData"],
                      "external-inputs": [{"name": "session", "type": "Session"}]}]}  # fmt: skip


@pytest.mark.parametrize("value", HOSTILE)
def test_user_values_reach_the_program_literally_in_every_quote_context(value, tmp_path):
    value = value.replace("MARK", str(tmp_path / "marker"))
    line = ARGV + ' #V# \'#V#\' "#V#" pre#V#post "$(printf %s "#V#")" \'[#V#]\' # it\'s #V#'
    command = load_command(json.dumps(_string_command(line)))
    resolved = resolve(command, command.xnat[0], {"session": "E1", "V": value}, FakeArchive())
    argv = _argv_of(resolved.command_line, tmp_path / "marker")
    assert argv == [value, value, value, f"pre{value}post", value, f"[{value}]"]


@pytest.mark.parametrize("value", HOSTILE)
def test_flagged_values_stay_one_word(value, tmp_path):
    value = value.replace("MARK", str(tmp_path / "marker"))
    for sep, expected in (("=", [f"--v={value}"]), (" ", ["--v", value])):
        data = _string_command(ARGV + " #V#", **{"command-line-flag": "--v",
                                                 "command-line-separator": sep})  # fmt: skip
        command = load_command(json.dumps(data))
        line = resolve(command, command.xnat[0], {"session": "E1", "V": value}, FakeArchive())
        assert _argv_of(line.command_line, tmp_path / "marker") == expected


@pytest.mark.parametrize(
    ("delimiter", "expected"),
    [
        ("flag", lambda a, b: ["--scan=" + a, "--scan=" + b]),
        ("comma", lambda a, b: [f"--scan={a},{b}"]),
        ("space", lambda a, b: ["--scan=" + a, b]),
        ("quoted-space", lambda a, b: [f"--scan={a} {b}"]),
    ],
)
def test_archive_values_in_lists_stay_literal(delimiter, expected, tmp_path):
    data = _multi(delimiter)
    data["command-line"] = ARGV + " #SCAN_IDS#"
    command = load_command(json.dumps(data))
    archive = FakeArchive()
    first = f"1; touch {tmp_path / 'marker'}"
    archive.session["scans"][0]["id"] = first
    archive.session["scans"][1]["id"] = "$(id) *"
    line = resolve(command, command.xnat[0], {"session": "E1"}, archive).command_line
    assert _argv_of(line, tmp_path / "marker") == expected(first, "$(id) *")


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ("echo `cat #V#`", "inside backquotes"),
        ("echo ${X:-#V#}", "inside \\$\\{"),
        ("echo \\#V#", "after a backslash"),
        ("cat <<EOF\n#V#\nEOF", "after a here-document"),
    ],
)
def test_keys_where_no_quoting_holds_are_refused_unless_raw(line, where):
    from xnat_ml.containers.quoting import QuotingError

    command = load_command(json.dumps(_string_command(line)))
    values = {"session": "E1", "V": "a;b"}
    with pytest.raises(QuotingError, match=f"#V# sits {where}"):
        resolve(command, command.xnat[0], values, FakeArchive())
    assert (
        "a;b"
        in resolve(command, command.xnat[0], values, FakeArchive(), raw_inputs=["V"]).command_line
    )


def test_raw_inputs_are_spliced_as_they_are():
    command = load_command(json.dumps(_string_command("#V# > /output/out.txt")))
    values = {"session": "E1", "V": "find /input -type f | wc -l"}
    quoted = resolve(command, command.xnat[0], values, FakeArchive())
    assert quoted.command_line == "'find /input -type f | wc -l' > /output/out.txt"
    spliced = resolve(command, command.xnat[0], values, FakeArchive(), raw_inputs=["V"])
    assert spliced.command_line == "find /input -type f | wc -l > /output/out.txt"


def test_sensitive_values_are_masked_in_the_shown_command_line():
    data = _string_command("login --password=#V# --user #U#", sensitive=True)
    data["inputs"].append({"name": "U", "type": "string", "replacement-key": "#U#"})
    command = load_command(json.dumps(data))
    values = {"session": "E1", "V": "s3cret", "U": "bob"}
    resolved = resolve(command, command.xnat[0], values, FakeArchive())
    assert resolved.command_line == "login --password=s3cret --user bob"
    assert resolved.shown_command_line == "login --password='*****' --user bob"


@pytest.mark.parametrize("value", ["../../etc", "a:/b:rw", "x,y", "a\nb"])
def test_values_in_mount_paths_and_working_directory_stay_plain_paths(value):
    data = _string_command("true")
    data["mounts"] = [{"name": "m", "path": "/work/#V#"}]
    command = load_command(json.dumps(data))
    with pytest.raises(XnatMlError, match="mount 'm': .* is not a plain absolute path"):
        resolve(command, command.xnat[0], {"session": "E1", "V": value}, FakeArchive())
    data = _string_command("true")
    data["working-directory"] = "/work/#V#"
    command = load_command(json.dumps(data))
    with pytest.raises(XnatMlError, match="working-directory: .* is not a plain absolute path"):
        resolve(command, command.xnat[0], {"session": "E1", "V": value}, FakeArchive())
    fine = resolve(command, command.xnat[0], {"session": "E1", "V": "a b"}, FakeArchive())
    assert fine.working_dir == "/work/a b"
