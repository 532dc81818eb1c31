"""The training core stays XNAT-free: importing it (and its runner) pulls in neither xnatpy, our
XNAT client nor the server; only the project_* modules and the verbs talk to XNAT."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_xnat_client_or_server() -> None:
    code = (
        "import sys, xnat_ml.training, xnat_ml.training.runner\n"
        "bad = [m for m in ('xnat', 'flask', 'xnat_ml.server', 'xnat_ml.xnat.connection',"
        " 'xnat_ml.xnat.transfer', 'xnat_ml.training.project_files') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
