"""The dataset core stays XNAT-free: importing it pulls in neither xnatpy, our XNAT client nor the
server (nibabel itself imports requests, so that is not checked)."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_xnat_client_or_server() -> None:
    code = (
        "import sys, xnat_ml.datasets\n"
        "bad = [m for m in ('xnat', 'flask', 'xnat_ml.server', 'xnat_ml.xnat.connection',"
        " 'xnat_ml.xnat.queries', 'xnat_ml.xnat.transfer') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
