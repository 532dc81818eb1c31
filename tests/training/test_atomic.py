"""Atomic writes: a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from xnat_ml.atomic import write_atomic, write_json_atomic


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = write_json_atomic(tmp_path / "status.json", {"state": "running"})

    def half_then_crash(handle) -> None:
        handle.write(b'{"state": "comp')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_then_crash)
    assert target.read_text() == '{\n  "state": "running"\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
