"""The command JSON validator: real XNAT commands and ours pass, broken ones fail clearly."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from shared_data import XNAT_COMMANDS, require

from xnat_ml.cli import main
from xnat_ml.containers.command import load_command, parse_command, read_command_file
from xnat_ml.containers.matcher import MatcherError, compile_matcher, matches
from xnat_ml.containers.validate import validate
from xnat_ml.errors import XnatMlError

REPO = Path(__file__).resolve().parents[2]
OURS = sorted((REPO / "command_json").glob("*.json"))
SHARED = sorted(XNAT_COMMANDS.glob("*.json"))


def errors_of(data) -> list[str]:
    command, problems = parse_command(json.dumps(data) if not isinstance(data, str) else data)
    if command is not None:
        problems += validate(command)
    return [str(p) for p in problems if not p.warning]


def test_command_json_files_exist():
    shipped = {"roi-to-mask.json", "dicom-to-nifti.json", "build-dataset.json", "train.json",
               "finetune.json", "promote.json", "evaluate.json", "infer.json"}  # fmt: skip
    assert {p.name for p in OURS} >= shipped


@pytest.mark.parametrize("path", OURS + SHARED, ids=lambda p: p.name)
def test_every_command_file_validates(path: Path):
    command, problems = read_command_file(path)
    assert command is not None
    assert [str(p) for p in problems if not p.warning] == []
    assert command.xnat, "every command has at least one wrapper"


def test_shared_files_present():
    require(XNAT_COMMANDS)
    assert len(SHARED) == 5


def test_legacy_keys_are_read():
    dcm2niix = load_command((XNAT_COMMANDS / "dcm2niix.command.json"
                             if SHARED else OURS[0]).read_bytes())  # fmt: skip
    if SHARED:
        derived = dcm2niix.xnat[0].derived_inputs[0]
        assert derived.derived_from_wrapper_input == "scan"  # from derived-from-xnat-input
        assert dcm2niix.xnat[0].output_handlers[0].as_a_child_of == "scan"
        assert dcm2niix.mounts[0].writable is False  # "false" as a string
        assert dcm2niix.outputs[0].required is True  # "true" as a string


def test_cli_validate_ok_and_failure(tmp_path: Path, capsys):
    assert main(["commands", "validate", *map(str, OURS)]) == 0
    bad = tmp_path / "bad.json"
    data = json.loads(OURS[0].read_text())
    data["command-line"] += " #NOT_DEFINED#"
    bad.write_text(json.dumps(data))
    assert main(["commands", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "command-line: replacement key #NOT_DEFINED# is not defined by any input" in out
    deep = tmp_path / "deep.json"
    deep.write_text('{"name": "x", "inputs": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert main(["commands", "validate", str(deep)]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "JSON nested too deeply" in out, out


def test_cli_label_is_the_commands_as_one_json_array(tmp_path: Path, capsys):
    assert main(["commands", "label", *map(str, OURS)]) == 0
    label = capsys.readouterr().out
    assert "\n" not in label.strip()  # one line: a Dockerfile build argument
    assert json.loads(label) == [json.loads(p.read_text()) for p in OURS]
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "command-line": "run #NOPE#"}')
    for broken in (bad, tmp_path / "missing.json"):
        assert main(["commands", "label", str(OURS[0]), str(broken)]) == 1
        printed = capsys.readouterr()
        assert printed.out == "" and str(broken) in printed.err  # no half-made label


@pytest.fixture
def roi_to_mask() -> dict:
    return json.loads((REPO / "command_json" / "roi-to-mask.json").read_text())


def test_as_a_child_of_unknown_input(roi_to_mask):
    roi_to_mask["xnat"][0]["output-handlers"][0]["as-a-child-of"] = "sessionz"
    assert errors_of(roi_to_mask) == [
        "xnat[0].output-handlers[0].as-a-child-of: 'sessionz' is not a wrapper input"
    ]


def test_as_a_child_of_multiple_input(roi_to_mask):
    roi_to_mask["xnat"][0]["derived-inputs"].append(
        {"name": "scans", "type": "Scan", "derived-from-wrapper-input": "session", "multiple": True}
    )
    roi_to_mask["xnat"][0]["derived-inputs"].insert(
        2, {"name": "session", "type": "Session", "derived-from-wrapper-input": "roi-collection"}
    )
    roi_to_mask["xnat"][0]["output-handlers"][0]["as-a-child-of"] = "scans"
    errors = errors_of(roi_to_mask)
    assert any(
        "output-handlers[0].as-a-child-of: 'scans' allows multiple values" in e for e in errors
    ), errors


def test_as_a_child_of_property_not_uri(roi_to_mask):
    roi_to_mask["xnat"][0]["derived-inputs"].append(
        {"name": "session", "type": "Session", "derived-from-wrapper-input": "roi-collection",
         "derived-from-xnat-object-property": "label"}
    )  # fmt: skip
    roi_to_mask["xnat"][0]["output-handlers"][0]["as-a-child-of"] = "session"
    errors = errors_of(roi_to_mask)
    assert any("'session' resolves to its 'label'; uploading needs its uri" in e
               for e in errors), errors  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(bogus=1), "bogus: unknown field of a command"),
        (
            lambda d: d["mounts"][0].update(writable="maybe"),
            "mounts[0].writable: expected true or false",
        ),
        (lambda d: d.update({"limit-memory": "lots"}), "limit-memory: expected a number"),
        (lambda d: d.update(type="singularity"), "type: 'singularity' is not one of"),
        (lambda d: d.update({"schema-version": "2.0"}), "schema-version: '2.0' is not supported"),
        (
            lambda d: d["mounts"].append({"name": "roi", "path": "/x"}),
            "mount name 'roi' is not unique",
        ),
        (
            lambda d: d["mounts"][0].update(path="relative"),
            "mounts[0].path: 'relative' is not an absolute",
        ),
        (lambda d: d["outputs"][0].update(mount="nope"), "outputs[0].mount: 'nope' is not a mount"),
        (
            lambda d: d["outputs"][0].update(path="../../etc"),
            "outputs[0].path: '../../etc' must stay inside",
        ),
        (lambda d: d["inputs"][0].update(type="text"), "inputs[0].type: 'text' is not one of"),
        (
            lambda d: d["inputs"][0].update(type="select-one"),
            "inputs[0].select-values: a select-one input needs",
        ),
        (
            lambda d: d["xnat"][0].update(contexts=["xnat:notAType"]),
            "contexts[0]: 'xnat:notAType' is not a known",
        ),
        (
            lambda d: d["xnat"][0]["external-inputs"][0].update(type="Sesion"),
            "external-inputs[0].type: 'Sesion'",
        ),
        (
            lambda d: d["xnat"][0]["external-inputs"][0].update(matcher="@.label =="),
            "matcher: '@.label ==' does not parse",
        ),
        (
            lambda d: d["xnat"][0]["derived-inputs"][0].update(
                {"provides-files-for-command-mount": "nomount"}
            ),
            "derived-inputs[0].provides-files-for-command-mount: 'nomount' is not a mount",
        ),
        (
            lambda d: d["xnat"][0]["derived-inputs"][1].update(
                {"provides-value-for-command-input": "NOPE"}
            ),
            "derived-inputs[1].provides-value-for-command-input: 'NOPE' is not a command input",
        ),
        (
            lambda d: d["xnat"][0]["derived-inputs"][0].update(
                {"derived-from-wrapper-input": "ghost"}
            ),
            "derived-inputs[0].derived-from-wrapper-input: 'ghost' is not a wrapper input",
        ),
        (
            lambda d: d["xnat"][0]["derived-inputs"][1].update(
                {"derived-from-xnat-object-property": "colour"}
            ),
            "'colour' is not a property of a Resource",
        ),
        (
            lambda d: d["xnat"][0]["output-handlers"][0].update({"accepts-command-output": "nope"}),
            "output-handlers[0].accepts-command-output: 'nope' is not a command output",
        ),
        (lambda d: d["xnat"][0]["output-handlers"].pop(), "command output 'labels' has no handler"),
        (
            lambda d: d["xnat"][0]["output-handlers"][0].update(type="Folder"),
            "output-handlers[0].type: 'Folder'",
        ),
        (
            lambda d: d.update({"environment-variables": {"XNAT_PASS": "x"}}),
            "environment-variables.XNAT_PASS: is reserved",
        ),
        (
            lambda d: d.update({"command-line": d["command-line"] + " #GHOST#"}),
            "replacement key #GHOST# is not defined",
        ),
        (lambda d: d["inputs"].append(d["inputs"][0]), "input name 'ROI_TYPE' is not unique"),
        (lambda d: d.update(xnat={"not": "a list"}), "xnat: expected a list"),
        (lambda d: d.update(gpus="lots"), "gpus: 'lots' is neither 'all' nor a whole number"),
        (lambda d: d.update(gpus=["1"]), "gpus: expected a string"),
        (lambda d: d.update(runtime="nvidia; rm"), "runtime: 'nvidia; rm' is not a container"),
        (
            lambda d: d.update({"generic-resources": {"nvidia.com/gpu": "one"}}),
            "generic-resources.nvidia.com/gpu: 'one' is not a whole number",
        ),
    ],
)
def test_broken_commands(roi_to_mask, change, expected):
    data = copy.deepcopy(roi_to_mask)
    change(data)
    errors = errors_of(data)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{", "invalid JSON at line 1"),
        ("", "invalid JSON at line 1"),
        ("[1, 2]", "expected a JSON object"),
        ("null", "expected a JSON object"),
        ("[" * 100_000, "nested too deeply"),
        ('{"name": "x", "xnat": ' + "[" * 65 + "]" * 65 + "}", "nested too deeply (over 64"),
        ('{"name": "x", "pad": "' + "a" * 1_100_000 + '"}', "larger than"),
        ('{"name": 5, "inputs": [7, "x"], "xnat": [null]}', "inputs[0]: expected a JSON object"),
        (
            '{"name": "\\u0000", "mounts": [{"name": "a/b", "path": "/a"}]}',
            "mounts[0].name: 'a/b' may contain only",
        ),
    ],
)
def test_hostile_json(text, expected):
    errors = errors_of(text)
    assert any(expected in e for e in errors), errors
    with pytest.raises(XnatMlError, match="invalid command JSON"):
        load_command(text)


def test_matcher_semantics():
    scan = {"id": "3", "scan-type": "T1w", "uid": "1.2", "resources": [{"label": "DICOM"}]}
    assert matches("'DICOM' in @.resources[*].label", scan)
    assert not matches("'NIFTI' in @.resources[*].label", scan)
    assert matches("@.scan-type =~ /t1.*/i && @.uid == '1.2'", scan)
    assert matches("!(@.id == '4') || @.missing == 1", scan)
    assert not matches("@.missing == 'x'", scan)
    assert matches("@.label == 'DICOM'", {"label": "DICOM"})
    for bad in ("@.label ==", "(@.a == 1", "foo == 1", "@.a =~ /[/", "'x' in"):
        with pytest.raises(MatcherError):
            compile_matcher(bad)


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_matcher_wildcards_use_no_deprecated_jsonpath():
    """`.*` and `..*` select every child, arrays included, without jsonpath-ng's deprecated
    `Fields('*')`."""
    scan = {"id": "3", "resources": [{"label": "DICOM"}, {"label": "NIFTI"}]}
    assert matches("'NIFTI' in @.*[*].label", scan)
    assert matches("'NIFTI' in @.resources.*.label", scan)
    assert matches("'DICOM' in @..*.label", scan)
    assert not matches("'SEG' in @..*.label", scan)


def test_gpu_fields_take_xnat_types(roi_to_mask):
    """`gpus` is a string ("all" or a count; a JSON number is read as one, as Jackson does);
    a GPU generic resource asking for another count than `gpus` is a warning."""
    for gpus in ("all", "2", 2):
        data = dict(copy.deepcopy(roi_to_mask), gpus=gpus, runtime="nvidia")
        data["generic-resources"] = {"nvidia.com/gpu": "2"}
        assert errors_of(data) == [], gpus
    data = dict(copy.deepcopy(roi_to_mask), gpus="1")
    data["generic-resources"] = {"nvidia.com/gpu": "2"}
    command, problems = parse_command(json.dumps(data))
    warnings = [str(p) for p in problems + validate(command) if p.warning]
    assert any("asks for 2 GPU(s) and gpus for 1" in w for w in warnings), warnings
