"""The command JSONs and subscriptions travel with a wheel and are found where it installs them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from xnat_ml import assets

REPO = Path(__file__).resolve().parents[2]


def test_wheel_carries_every_command_and_subscription(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("xnat_ml-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("command_json", "event_handlers"):
        shipped = {p.name for p in (REPO / folder).glob("*.json")}
        assert shipped, folder
        for name in shipped:
            assert any(n.endswith(f"/data/share/xnat-ml/{folder}/{name}") for n in names), name
    # The training config templates with their bundles, as in the checkout.
    for path in (REPO / "training_configs").rglob("*"):
        if path.is_file():
            shipped_as = f"/data/share/xnat-ml/{path.relative_to(REPO).as_posix()}"
            assert any(n.endswith(shipped_as) for n in names), shipped_as
    # The schema's migrations run from the installed package (no alembic.ini, no checkout).
    migrations = REPO / "xnat_ml" / "server" / "store" / "migrations"
    for path in [*migrations.glob("*.py"), migrations / "script.py.mako",
                 *migrations.glob("versions/*.py")]:  # fmt: skip
        assert path.relative_to(REPO).as_posix() in names, path.name
    # The XSDs the server serves and types fields by (formats/datatypes.py reads them).
    xsds = list((REPO / "xnat_ml" / "server" / "formats" / "schemas").glob("*.xsd"))
    assert xsds
    for path in xsds:
        assert path.relative_to(REPO).as_posix() in names, path.name


def test_installed_copy_is_used_outside_a_checkout(tmp_path, monkeypatch):
    installed = tmp_path / "prefix" / "share" / "xnat-ml"
    (installed / "event_handlers").mkdir(parents=True)
    monkeypatch.setattr(assets, "_SOURCE_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(assets, "_INSTALLED_ROOT", installed)
    assert assets.shipped_dir("event_handlers") == installed / "event_handlers"
    # Neither there: the checkout's path comes back, for the caller's error message.
    assert assets.shipped_dir("command_json") == tmp_path / "site-packages" / "command_json"


def test_checkout_copy_wins_in_a_source_tree():
    assert assets.shipped_dir("command_json") == REPO / "command_json"
