"""TorchScript export: the saved module gives the network's outputs; a failed check leaves
nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from inference_models import region_model, tissues_model

from xnat_ml.errors import XnatMlError
from xnat_ml.inference import export_torchscript, load_model


def test_export_gives_equal_outputs(tmp_path: Path) -> None:
    model = tissues_model(tmp_path / "tissues")
    exported = export_torchscript(model, tmp_path / "out" / "model.ts", spatial_shape=(32, 32, 32))
    target = exported.path
    assert target == tmp_path / "out" / "model.ts" and target.is_file()
    assert exported.input_shape == (1, 1, 32, 32, 32) and 0 <= exported.max_abs_difference < 1e-5
    extra = {"metadata.json": "", "inference.json": ""}
    loaded = torch.jit.load(str(target), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"]["inputs"]["image"]
    sample = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(loaded(sample), load_model(model).network(sample), atol=1e-5)


def test_bundle_script_network_exports_with_metadata_shape(tmp_path: Path) -> None:
    model = region_model(tmp_path / "regions")
    target = export_torchscript(model, tmp_path / "model.ts").path  # 16^3 from its metadata
    image = torch.zeros(1, 1, 16, 16, 16)
    assert torch.jit.load(str(target))(image).shape == (1, 3, 16, 16, 16)


def test_a_failed_check_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    model = tissues_model(tmp_path / "tissues")
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: False)
    with pytest.raises(XnatMlError, match="its TorchScript gives other outputs"):
        export_torchscript(model, tmp_path / "model.ts", spatial_shape=(32, 32, 32))
    assert list(tmp_path.glob("*.ts*")) == []
