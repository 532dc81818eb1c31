"""Definition parsing: the datasets plugin's shape as is, every addition, and hostile input."""

from __future__ import annotations

import copy
import json
from fractions import Fraction

import pytest
from records_factory import DEFINITION

from xnat_ml.datasets import DefinitionError, parse_definition
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import LabelMap

# The example in the plugin's TaggedResourceMap resolver, verbatim.
PLUGIN_DEFINITION = {
    "project": "P1",
    "id": "def1",
    "label": "Spleen",
    "description": "spleen CT",
    "criteria": [
        {
            "resolver": "TaggedResourceMap",
            "payload": {
                "Images": {
                    "tag": "image",
                    "SeriesDescription": ["T1%"],
                    "ResourceFormat": ["NIFTI"],
                    "ResourceContent": ["/T1./i"],
                    "ResourceLabel": ["/nifti/i"],
                },
                "Labels": {
                    "tag": "label",
                    "SeriesDescription": ["Segment%"],
                    "ResourceFormat": ["NIFTI"],
                    "ResourceContent": ["/Segmentat.{3}/i"],
                    "ResourceLabel": ["/nifti/i"],
                },
            },
        }
    ],
}


def test_plugin_definition_reads_as_is() -> None:
    d = parse_definition(json.dumps(PLUGIN_DEFINITION))
    assert (d.id, d.project, d.title, d.description) == ("def1", "P1", "Spleen", "spleen CT")
    assert [t.tag for t in d.images] == ["image"] and d.label and d.label.tag == "label"
    assert d.label.source == "scan" and [p.text for p in d.label.series] == ["Segment%"]
    assert [p.text for p in d.images[0].resource_content] == ["/T1./i"]
    # defaults: 70/20/10 seed 0, label map from ML_MODELS, the one NIfTI of a scan resource
    assert d.split.shares == (
        ("training", Fraction(7, 10)),
        ("validation", Fraction(1, 5)),
        ("testing", Fraction(1, 10)),
    )
    assert d.labelmap == "ML_MODELS/region2MaskValueMap.txt"
    assert d.images[0].file_name[0].matches("x.NII.GZ")


def test_payload_as_json_string_resolver_default_and_tag_from_name() -> None:
    payload = {"Image": {"SeriesDescription": "T1w"}, "Label": {"Source": "roiCollection"}}
    d = parse_definition({"criteria": [{"payload": json.dumps(payload)}]})
    assert [t.tag for t in d.tags] == ["image", "label"]  # name with first letter lowered
    assert [p.text for p in d.images[0].series] == ["T1w"]  # a lone string is one value
    assert [p.text for p in d.label.resource_label] == ["LABELMAP"]
    assert [p.text for p in d.label.file_name] == ["labels.nii.gz"]


def test_every_addition() -> None:
    doc = {
        "criteria": [
            {
                "payload": {
                    "t1": {"SeriesDescription": ["T1%"], "FileName": ["/brain\\.nii/"]},
                    "flair": {"SeriesDescription": ["%FLAIR%"]},
                }
            },
            {
                "payload": {
                    "label": {
                        "Source": "roiCollection",
                        "CollectionType": ["SEG", "RTSTRUCT"],
                        "CollectionName": ["/tumou?r/i"],
                        "ResourceLabel": ["MASKS"],
                        "FileName": "seg.nii.gz",
                    }
                }
            },
        ],
        "channels": ["flair", "t1"],
        "subjects": ["SUB%"],
        "sessions": ["/_MR1$/"],
        "split": {"folds": 5, "testing": 20, "seed": 7},
        "labelmap": {"labels": [{"name": "tumour", "value": 1}]},
        "requiredLabels": ["tumour", 1],
    }
    d = parse_definition(doc)
    assert [t.tag for t in d.images] == ["flair", "t1"]
    assert [p.text for p in d.label.collection_type] == ["SEG", "RTSTRUCT"]
    assert [p.text for p in d.label.resource_label] == ["MASKS"]
    assert [p.text for p in d.label.file_name] == ["seg.nii.gz"]
    assert d.subjects[0].matches("SUB1") and d.sessions[0].matches("X_MR1")
    assert d.split.folds == 5 and d.split.seed == 7
    assert d.split.shares[0] == ("testing", Fraction(1, 5))
    assert d.split.shares[1:] == tuple((f"fold{i}", Fraction(4, 25)) for i in range(5))
    assert isinstance(d.labelmap, LabelMap) and d.required_labels == ("tumour", 1)


@pytest.mark.parametrize(
    ("split", "shares"),
    [
        (
            {"training": 8, "validation": 2},
            {"training": Fraction(4, 5), "validation": Fraction(1, 5)},
        ),
        ({"training": 70, "validation": 20, "test": 10}, {"testing": Fraction(1, 10)}),
        ({"training": 1}, {"training": 1}),
    ],
)
def test_split_weights(split: dict, shares: dict) -> None:
    d = parse_definition({**DEFINITION, "split": split})
    assert shares.items() <= dict(d.split.shares).items()


def _with(path: str, value: object) -> dict:
    """DEFINITION with one value set at a dotted path (``criteria.0.payload.Images.tag``)."""
    doc = copy.deepcopy(DEFINITION)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{", "invalid JSON at line 1"),
        ("[]", "expected a JSON object, got a list"),
        (b"\xff\xfe", "not UTF-8"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (" " * (2 << 20), "larger than"),
        (_with("colour", 1), "unknown key 'colour'"),
        (_with("criteria", []), "criteria must be a non-empty list"),
        (
            _with("criteria.0.resolver", "SeriesDescription"),
            "criteria[0].resolver: 'SeriesDescription' is not supported",
        ),
        (_with("criteria.0.payload", "{"), "criteria[0].payload: invalid JSON"),
        (_with("criteria.0.payload", {}), "criteria[0].payload: expected a non-empty object"),
        (
            _with("criteria.0.payload.Images.Series", ["x"]),
            "criteria[0].payload.Images: unknown key 'Series'",
        ),
        (
            _with("criteria.0.payload.Images.SeriesDescription", ["T1%", "/[/"]),
            "criteria[0].payload.Images.SeriesDescription[1]: bad regex '/[/'",
        ),
        (
            _with("criteria.0.payload.Images.SeriesDescription", [1]),
            "SeriesDescription[0]: 1 is not a string",
        ),
        (
            _with("criteria.0.payload.Images.SeriesDescription", []),
            "SeriesDescription: expected a string or a non-empty list",
        ),
        (
            _with("criteria.0.payload.Images.ResourceLabel", {"a": 1}),
            "ResourceLabel: expected a string or a non-empty list",
        ),
        (
            _with("criteria.0.payload.Images.CollectionType", ["SEG"]),
            "Images.CollectionType: only applies with Source roiCollection",
        ),
        (
            _with("criteria.0.payload.Labels.Source", "assessor"),
            "Labels.Source: 'assessor' is not one of scan, roiCollection",
        ),
        (_with("criteria.0.payload.Labels.tag", "image"), "tag 'image' is defined twice"),
        (_with("criteria.0.payload.Labels.tag", ""), "Labels.tag: '' is not a tag name"),
        (_with("criteria.0.payload.Images.tag", "label"), "tag 'label' is defined twice"),
        (_with("criteria.0.payload.Images", []), "Images: expected an object, got a list"),
        (
            _with("criteria.0.payload.T2", {"SeriesDescription": "T2%"}),
            "channels must list the order of the image tags ['image', 't2']",
        ),
        (
            _with("channels", ["image", "image"]),
            "channels ['image', 'image'] must list each image tag once",
        ),
        (_with("split", {"training": -1}), "split.training: -1 is not a number"),
        (_with("split", {"training": True}), "split.training: True is not a number"),
        (_with("split", {"training": 0}), "split: training, validation and testing are all 0"),
        (_with("split", {"training": 1, "seed": "x"}), "split.seed: 'x' is not an integer"),
        (_with("split", {"training": 1, "folds": 5}), "split: unknown key 'training'"),
        (_with("split", {"folds": 1}), "split.folds: 1 is not an integer 2..100"),
        (_with("split", {"folds": 3, "testing": 100}), "leaves no subject to fold"),
        (_with("split", {"test": 1, "testing": 1}), "either test or testing"),
        (_with("split", [70, 30]), "split: expected an object, got a list"),
        (_with("labelmap", "../etc/passwd"), "labelmap: '../etc/passwd' is not a RESOURCE/path"),
        (_with("labelmap", "/abs/x.txt"), "is not a RESOURCE/path"),
        (_with("labelmap", 3), "labelmap: expected a path or a label map object"),
        (_with("labelmap", {"labels": [{"name": "a", "value": 0}]}), "value 0 outside 1..255"),
        (_with("requiredLabels", "liver"), "requiredLabels: expected a list"),
        (_with("requiredLabels", [0]), "requiredLabels[0]: 0 is not a label name or value"),
        (_with("subjects", ["/(?=a)/"]), "subjects[0]: bad regex '/(?=a)/': invalid perl"),
        (_with("description", ["x"]), "description: expected a string"),
        (_with("criteria.0.payload.Images.SeriesDescription", ["x"] * 101), "more than 100 values"),
        (_with("criteria.0.payload", {f"t{i}": {} for i in range(40)}), "more than 32 tags"),
        (
            _with("criteria.0.payload", {f"t{i}": {"SeriesDescription": ["x"] * 100}
                                         for i in range(3)}),  # fmt: skip
            "303 patterns, more than 256 in all",
        ),
    ],
)
def test_bad_definitions_name_field_and_value(doc: object, message: str) -> None:
    with pytest.raises(XnatMlError) as info:
        parse_definition(doc if isinstance(doc, str | bytes) else doc, "brain.json")
    text = str(info.value)
    assert text.startswith("dataset definition brain.json") or text.startswith("label map")
    assert message in text
    assert "\n" not in text


def test_definition_errors_are_definition_errors() -> None:
    with pytest.raises(DefinitionError):
        parse_definition(_with("split", {"folds": 0}))


def test_label_map_content_from_bytes_json_or_text() -> None:
    from xnat_ml.imaging.labelmap import parse_labelmap

    text = parse_labelmap(b"\xef\xbb\xbfliver=1\nspleen=2\n", "ML_MODELS/region2MaskValueMap.txt")
    assert [(lab.name, lab.value) for lab in text.labels] == [("liver", 1), ("spleen", 2)]
    doc = parse_labelmap(json.dumps({"labels": [{"name": "tumour", "value": 3}]}), "x.json")
    assert doc.by_value(3).name == "tumour"
    with pytest.raises(XnatMlError, match="label map y: not UTF-8"):
        parse_labelmap(b"\xff", "y")
