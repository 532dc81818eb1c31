"""Training configs in a project's ML_CONFIGS resource: ``<name>.json``, checked before stored.

A config is replaced whole by a later push of the same name; every run keeps its own copy
(``config.json`` in its run folder), so replacing one never changes what a run did.
"""

from __future__ import annotations

from pathlib import Path

from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.datasets.versions import list_versions
from xnat_ml.errors import XnatMlError
from xnat_ml.layout import CONFIGS_RESOURCE
from xnat_ml.training.config import TrainingConfig, load_config, parse_config
from xnat_ml.training.limits import parse_json
from xnat_ml.training.project_files import list_paths, read_text, upload_tree
from xnat_ml.training.project_models import check_name, list_models, parse_version

SUFFIX = ".json"


def list_configs(session: XNATSession, project: str) -> list[str]:
    paths = list_paths(session, project, CONFIGS_RESOURCE)
    return [p.removesuffix(SUFFIX) for p in paths if p.endswith(SUFFIX) and "/" not in p]


def push_config(session: XNATSession, project: str, path: Path, name: str | None = None) -> str:
    """Check the config file, then store it as ``ML_CONFIGS/<name>.json``; the name."""
    name = check_name("config", name or path.stem)
    load_config(path)
    with scratch.temporary("config-") as tmp:
        copy = Path(tmp) / f"{name}{SUFFIX}"
        copy.write_bytes(path.read_bytes())
        upload_tree(session, project, CONFIGS_RESOURCE, {copy.name: copy}, content="ML_CONFIG")
    return name


def check_references(session: XNATSession, project: str, config: TrainingConfig, what: str) -> None:
    """Refuse a config whose model or dataset (at the version it names, or any) the project
    lacks, naming what it has: otherwise the mistake shows only at the first `train`."""
    for kind, ref, have in (
        ("model", config.model, {n: [f"v{v}" for v in vs]
                                 for n, vs in list_models(session, project).items()}),
        ("dataset", config.dataset, {n: [f"v{v.number}" for v in vs]
                                     for n, vs in list_versions(session, project).items()}),
    ):  # fmt: skip
        number = parse_version(f"{what} {kind}", ref.version)
        versions = have.get(ref.name, [])
        if versions and (number is None or f"v{number}" in versions):
            continue
        wanted = ref.name if number is None else f"{ref.name}:{number}"
        held = "; ".join(f"{n} {', '.join(vs)}" for n, vs in sorted(have.items())) or "none"
        raise XnatMlError(
            f"{what}: {kind} {wanted} is not in project {project} (its {kind}s: {held}); "
            f"give the config's {kind} a name the project has, or add it first"
        )


def read_config(session: XNATSession, project: str, name: str) -> TrainingConfig:
    """The stored config, checked again as at push: it may have been written around the CLI."""
    check_name("config", name)
    if name not in list_configs(session, project):
        raise XnatMlError(f"config {name}: not in project {project}'s {CONFIGS_RESOURCE}")
    source = f"{CONFIGS_RESOURCE}/{name}{SUFFIX}"
    text = read_text(session, project, CONFIGS_RESOURCE, f"{name}{SUFFIX}")
    return parse_config(parse_json(text, f"training config {source}"), source)
