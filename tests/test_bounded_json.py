"""The one reader of outside JSON: every refusal is one line naming the document, a caller's
own error type when it asks, and nothing deep enough to break Python's recursion gets out."""

from __future__ import annotations

import json

import pytest

from xnat_ml.bounded_json import (
    MAX_JSON_DEPTH,
    JsonDocumentError,
    load_json,
    read_json,
)
from xnat_ml.errors import XnatMlError


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("{", "invalid JSON at line 1 column 2"),
        ("", "invalid JSON at line 1 column 1"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        ('"' + "x" * 200 + '"', "larger than 100 bytes"),
        (nested(MAX_JSON_DEPTH + 1), f"JSON nested too deeply (over {MAX_JSON_DEPTH} levels)"),
        ('{"a": ' * 65 + "1" + "}" * 65, "nested too deeply"),
    ],
)
def test_refusals_are_one_line_naming_the_document(data, problem) -> None:
    limit = 100 if problem.startswith("larger") else 10**6
    with pytest.raises(JsonDocumentError) as info:
        load_json(data, "thing X", max_bytes=limit)
    message = str(info.value)
    assert message.startswith("thing X: ") and problem in message and "\n" not in message
    assert isinstance(info.value, XnatMlError) and isinstance(info.value, ValueError)


def test_a_hundred_thousand_levels_is_one_line_not_a_recursion_error() -> None:
    with pytest.raises(JsonDocumentError, match="nested too deeply"):
        load_json(nested(100_000), "deep")


def test_the_depth_limit_itself_is_accepted() -> None:
    assert load_json(nested(MAX_JSON_DEPTH), "ok") is not None
    assert load_json(b'\xef\xbb\xbf{"a": [1, {"b": null}]}', "bom") == {"a": [1, {"b": None}]}
    assert load_json("3", "scalar") == 3


def test_the_caller_chooses_the_error_type() -> None:
    class Mine(Exception):
        pass

    with pytest.raises(Mine, match="^mine: JSON nested too deeply"):
        load_json(nested(1000), "mine", error=Mine)


def test_files_are_capped_before_they_are_read(tmp_path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps(["x" * 2000]))
    with pytest.raises(JsonDocumentError, match=r"^big file: larger than 1000 bytes$"):
        read_json(big, "big file", max_bytes=1000)
    with pytest.raises(JsonDocumentError, match="^gone: cannot read"):
        read_json(tmp_path / "absent.json", "gone")
    assert read_json(big, "big file") == ["x" * 2000]
