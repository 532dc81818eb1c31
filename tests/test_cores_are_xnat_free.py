"""The XNAT-free cores of the stage packages stay so: importing every module behind a package's
public face pulls in neither xnatpy, Flask, our XNAT client nor the server. Only the XNAT layers
(resolver, versions, fetch, project_* modules) and the verbs talk to XNAT. nibabel itself imports
requests, so that is not checked."""

from __future__ import annotations

import subprocess
import sys

import pytest

import xnat_ml.datasets
import xnat_ml.inference
import xnat_ml.training

XNAT_SIDE = ("xnat", "flask", "xnat_ml.server", "xnat_ml.xnat.connection", "xnat_ml.xnat.queries",
             "xnat_ml.xnat.transfer", "xnat_ml.datasets.resolver",
             "xnat_ml.training.project_files")  # fmt: skip


def _face_modules(package) -> list[str]:
    """The modules behind a lazy package face (xnat_ml/lazy.py), imported by name."""
    return sorted({getattr(package, name).__module__ for name in package.__all__
                   if hasattr(getattr(package, name), "__module__")})  # fmt: skip


@pytest.mark.parametrize("package", [xnat_ml.datasets, xnat_ml.training, xnat_ml.inference],
                         ids=lambda p: p.__name__)
def test_core_imports_no_xnat_client_or_server(package) -> None:
    modules = _face_modules(package)
    assert len(modules) >= 5, modules  # the face really names the core
    code = (
        f"import sys, importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(m for m in {XNAT_SIDE!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
