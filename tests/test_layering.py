"""The arrows of ../shared/ARCHITECTURE.md (and docs/architecture): who may import whom in xnat_ml.

Reads every module's imports with `ast` (nothing is imported), so a module that is never loaded
by the tests is checked too. A new sub-package fails here until it gets a line in ALLOWED.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import xnat_ml

ROOT = Path(xnat_ml.__file__).resolve().parent

# Leaf modules with nothing of xnat_ml below them: any part may import them.
LEAVES = {"xnat_ml", "xnat_ml.errors", "xnat_ml.layout", "xnat_ml.assets", "xnat_ml.store",
          "xnat_ml.lazy", "xnat_ml.atomic", "xnat_ml.bounded_json", "xnat_ml.linear_regex",
          "xnat_ml.scratch"}
EVERYTHING = None

# Part of xnat_ml (sub-package or top-level module) -> the parts it may import ("talks to").
ALLOWED: dict[str, set[str] | None] = {
    "xnat": set(),
    "imaging": set(),
    "annotations": {"xnat", "imaging"},
    "datasets": {"xnat", "imaging"},  # label-map files are read by imaging (files only)
    "training": {"xnat", "datasets", "imaging"},
    "inference": {"xnat", "training", "datasets", "imaging"},  # dataset criteria; evaluate fetches
    "containers": {"xnat"},
    "events": {"containers"},
    "dashboard": {"xnat", "datasets", "training", "annotations", "containers", "imaging"},  # + the
    # stages' read models: installed commands (containers), label maps (imaging)
    "monailabel": {"xnat", "inference", "datasets", "training", "imaging", "containers"},
    "sample": {"xnat", "imaging"},  # builds a sample project and uploads it through xnat/
    "server": EVERYTHING,
    "cli": EVERYTHING,  # loads the verb modules by name (importlib), so nothing shows here
    "__main__": {"cli"},
    # the whole loop through each stage's client code; + server.process, see EXCEPTIONS
    "demo": {"xnat", "sample", "containers", "events", "datasets", "training", "imaging"},
    **{leaf.removeprefix("xnat_ml.").removeprefix("xnat_ml"): set() for leaf in LEAVES},
}

# imaging is files only: only these of xnat_ml, and no XNAT client or network library at all.
IMAGING_MAY_IMPORT = {"xnat_ml", "xnat_ml.errors", "xnat_ml.bounded_json", "xnat_ml.linear_regex"}
NETWORK = {"xnat", "pyxnat", "requests", "urllib3", "http", "socket", "urllib", "httpx", "aiohttp",
           "docker", "flask", "waitress", "werkzeug"}  # fmt: skip

# Explicit exceptions, each with its reason: (importing module, imported part).
EXCEPTIONS = {
    # demo starts `xnat-ml serve` as a child process (ServerProcess), it never imports the app.
    ("xnat_ml.demo", "xnat_ml.server.process"),
    # `xnat-ml events install` puts subscriptions on an XNAT: the events stage's thin XNAT layer.
    ("xnat_ml.events.install", "xnat_ml.xnat"),
    # an opt-in handler's MODEL setting names a model version, checked in ML_MODELS at install.
    ("xnat_ml.events.install", "xnat_ml.training.project_models"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative).is_dir()


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, relative imports resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:  # `from xnat_ml import errors` imports xnat_ml.errors
                full = f"{base}.{alias.name}"
                sub = base.startswith("xnat_ml") and _is_module(full)
                found.append((node.lineno, full if sub else base))
    return found


def _part(module: str) -> str:
    """The part of xnat_ml a module belongs to: `xnat_ml.events.cli` -> `events`."""
    return module.split(".")[1] if "." in module else ""


def _is_verb_module(module: str) -> bool:
    return module.endswith(".cli") or module.endswith("_cli")


def _violations(path: Path) -> list[str]:
    module = _module_name(path)
    part = _part(module)
    where = f"{path.relative_to(ROOT.parent)}:"
    allowed = ALLOWED[part]
    problems = []
    for line, target in _imports(path):
        top = target.split(".")[0]
        if part == "imaging" and top in NETWORK:
            problems.append(f"{where}{line} imports {target}: imaging uses no XNAT or network")
        if top != "xnat_ml" or _part(target) == part or target in LEAVES:
            continue
        if part == "imaging" and target not in IMAGING_MAY_IMPORT:
            problems.append(f"{where}{line} imports {target}: imaging imports only errors")
            continue
        if any(module == m and (target == t or target.startswith(t + ".")) for m, t in EXCEPTIONS):
            continue
        # Verb modules build on the dispatcher and take XNAT connection arguments from xnat/.
        if _is_verb_module(module) and (target == "xnat_ml.cli" or _part(target) == "xnat"):
            continue
        if allowed is not EVERYTHING and _part(target) not in allowed:
            problems.append(
                f"{where}{line} imports {target}: {part} talks only to "
                f"{', '.join(sorted(allowed)) or 'nothing of xnat_ml'} (besides the leaf modules)"
            )
    return problems


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_part_of_the_package_has_rules():
    parts = {_part(_module_name(path)) for path in SOURCES}
    assert parts - ALLOWED.keys() == set(), "add the new part to ALLOWED (and the map)"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_arrows(path):
    assert _violations(path) == []


def test_nothing_but_the_cli_and_demo_imports_the_server():
    importers = {
        _module_name(path)
        for path in SOURCES
        for _line, target in _imports(path)
        if _part(target) == "server" and _part(_module_name(path)) != "server"
    }
    assert importers <= {"xnat_ml.cli", "xnat_ml.demo"}


# Inside the server (docs/server.md): api/ holds the blueprints, store/ the archive store,
# formats/ file formats and value checks; services and the app sit at server/ top level.
API = "xnat_ml.server.api"


def _layer_violations(path: Path) -> list[str]:
    """A blueprint imports services, store and formats, never another blueprint; store/ and
    formats/ import no blueprint (app.py loads the blueprints by name, so nothing else does)."""
    module = _module_name(path)
    where = f"{path.relative_to(ROOT.parent)}:"
    problems = []
    for line, target in _imports(path):
        if not target.startswith(API + ".") or target == module:
            continue
        if module.startswith(API + "."):
            problems.append(f"{where}{line} imports {target}: a blueprint imports no other")
        elif module.startswith(("xnat_ml.server.store", "xnat_ml.server.formats")):
            problems.append(f"{where}{line} imports {target}: store/ and formats/ import no api/")
    return problems


SERVER_SOURCES = [path for path in SOURCES if _part(_module_name(path)) == "server"]


@pytest.mark.parametrize("path", SERVER_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_blueprints_import_services_not_blueprints(path):
    assert _layer_violations(path) == []


def test_the_layer_checker_sees_a_blueprint_import(tmp_path, monkeypatch):
    fake = tmp_path / "xnat_ml"
    for folder in ("api", "store"):
        (fake / "server" / folder).mkdir(parents=True)
    (fake / "server" / "api" / "other.py").write_text("")
    (fake / "server" / "api" / "one.py").write_text("from xnat_ml.server.api import other\n")
    (fake / "server" / "store" / "rows.py").write_text("from ..api.other import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    assert len(_layer_violations(fake / "server" / "api" / "one.py")) == 1
    assert len(_layer_violations(fake / "server" / "store" / "rows.py")) == 1


def test_the_checker_sees_a_broken_arrow(tmp_path, monkeypatch):
    """A module of imaging that imports the server and requests is reported twice over."""
    fake = tmp_path / "xnat_ml"
    (fake / "imaging").mkdir(parents=True)
    (fake / "server").mkdir()
    bad = fake / "imaging" / "bad.py"
    bad.write_text("import requests\nfrom xnat_ml.server import models\nfrom ..errors import X\n")
    (fake / "server" / "models.py").write_text("")
    (fake / "errors.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    problems = _violations(bad)
    assert [p.split(" imports ")[1].split(":")[0] for p in problems] == [
        "requests", "xnat_ml.server.models"
    ]  # fmt: skip
