"""Models in a project's ML_MODELS resource: ``<name>/v<N>/`` holding a bundle, label map, card.

A version is written once, after the whole folder passed ``validate_model``: its number is
claimed on the server first (``claim.json``, xnat/claims.py), so concurrent writers get
distinct versions, then its files go up in one atomic upload; old versions stay. The card's
``version`` is the folder's number, so a training config or ``--from NAME:N`` names exactly the
weights it means.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.datasets.cache import default_root
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import load_labelmap
from xnat_ml.layout import LABELMAP_FILE, MODELS_RESOURCE
from xnat_ml.training.bundle import (
    CONFIGS,
    INFERENCE_CONFIG,
    METADATA,
    read_json_file,
    validate_bundle,
)
from xnat_ml.training.digests import (
    DIGESTS_FILE,
    UNCOVERED,
    check_version,
    read_digests,
    write_digests,
)
from xnat_ml.training.limits import MAX_BUNDLE_BYTES, MAX_BUNDLE_FILES, parse_json
from xnat_ml.training.model import (
    CARD_FILE,
    ModelCard,
    Output,
    channel_names,
    output_labels,
    parse_card,
    read_card,
    sigmoid_outputs,
    validate_model,
    write_card,
)
from xnat_ml.training.project_files import download, file_uri, list_paths, read_text
from xnat_ml.xnat import claims
from xnat_ml.xnat.archives import extract_zip
from xnat_ml.xnat.claims import CLAIM_FILE, VersionFolders, fingerprint
from xnat_ml.xnat.responses import reported_as

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION_RE = re.compile(r"v?([1-9][0-9]*)")
_CARD_PATH = re.compile(rf"([^/]+)/v([1-9][0-9]*)/{re.escape(CARD_FILE)}")


def check_name(what: str, name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise XnatMlError(
            f"{what} name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_version(what: str, text: str | int | None) -> int | None:
    """``""``/None -> None (the latest), ``3`` or ``v3`` -> 3."""
    if text is None or text == "":
        return None
    match = _VERSION_RE.fullmatch(str(text))
    if not match:
        raise XnatMlError(f"{what}: version {text!r} is not a version number (N or vN)")
    return int(match[1])


def split_ref(what: str, text: str) -> tuple[str, int | None]:
    """``NAME[:VERSION]`` as given to ``--from`` and ``--dataset``."""
    name, _, version = text.partition(":")
    return check_name(what, name), parse_version(f"{what} {name}", version)


def list_models(session: XNATSession, project: str) -> dict[str, list[int]]:
    """Version numbers per model name, oldest first (a version counts once its card is there)."""
    found: dict[str, list[int]] = {}
    for path in list_paths(session, project, MODELS_RESOURCE):
        if match := _CARD_PATH.fullmatch(path):
            found.setdefault(match[1], []).append(int(match[2]))
    return {name: sorted(numbers) for name, numbers in sorted(found.items())}


def find_model(session: XNATSession, project: str, name: str, number: int | None) -> int:
    numbers = list_models(session, project).get(name, [])
    if not numbers:
        raise XnatMlError(f"model {name}: not in project {project}'s {MODELS_RESOURCE}")
    if number is None:
        return numbers[-1]
    if number not in numbers:
        known = ", ".join(f"v{n}" for n in numbers)
        raise XnatMlError(f"model {name}: no version v{number} in project {project} ({known})")
    return number


def read_model_card(session: XNATSession, project: str, name: str, number: int) -> ModelCard:
    path = f"{name}/v{number}/{CARD_FILE}"
    text = read_text(session, project, MODELS_RESOURCE, path)
    return parse_card(parse_json(text, f"{MODELS_RESOURCE}/{path}"), f"{MODELS_RESOURCE}/{path}")


def pull_model(session: XNATSession, project: str, name: str, number: int, dest: Path) -> Path:
    """Download version ``number`` of model ``name`` into ``dest`` (which must not exist), each
    file checked against the version's ``digests.json`` before anything reads it; its claim (the
    server's bookkeeping of who wrote it) stays behind."""
    if dest.exists():
        raise XnatMlError(f"model folder {dest}: already exists")
    prefix = f"{name}/v{number}/"
    paths = [p for p in list_paths(session, project, MODELS_RESOURCE)
             if p.startswith(prefix) and p != prefix + CLAIM_FILE]  # fmt: skip
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        download(session, project, MODELS_RESOURCE, paths, prefix, staging)
        check_version(staging, f"model {name} v{number}")
        for uncovered in UNCOVERED:  # the version's, not the model folder's
            (staging / uncovered).unlink(missing_ok=True)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def version_digests(session: XNATSession, project: str, name: str, number: int) -> dict[str, str]:
    """The ``files`` of ``<name>/v<number>/digests.json`` (refused when the version has none)."""
    path = f"{name}/v{number}/{DIGESTS_FILE}"
    listed = path in list_paths(session, project, MODELS_RESOURCE)
    text = read_text(session, project, MODELS_RESOURCE, path) if listed else None
    return read_digests(text, f"model {name} v{number}")


def _bundle_root(folder: Path) -> Path:
    """The bundle inside an unpacked archive: the folder itself or its single sub-folder."""
    if (folder / CONFIGS).is_dir():
        return folder
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and (entries[0] / CONFIGS).is_dir():
        return entries[0]
    raise XnatMlError(f"bundle {folder}: no {CONFIGS}/ folder at its top")


def _labels_in(labelmap: Path) -> dict[int, str]:
    return {0: "background"} | {lab.value: lab.name for lab in load_labelmap(labelmap).labels}


def _check_tree(bundle: Path, label: str) -> None:
    """No links (their targets are not the bundle's), and within the bundle caps."""
    count = size = 0
    for root, dirs, files in os.walk(bundle):
        for entry in dirs + files:
            path = Path(root, entry)
            if path.is_symlink():
                raise XnatMlError(f"{label}: {path.relative_to(bundle)} is a symbolic link; "
                                  "copy what it points to into the bundle instead")  # fmt: skip
        count += len(files)
        size += sum(Path(root, f).stat().st_size for f in files)
        if count > MAX_BUNDLE_FILES or size > MAX_BUNDLE_BYTES:
            raise XnatMlError(f"{label}: more than {MAX_BUNDLE_FILES} files or "
                              f"{MAX_BUNDLE_BYTES >> 30} GiB; too large for a bundle")  # fmt: skip


def _install_card(
    model: Path, name: str, labelmap: Path | None, output: Output | None, label: str
) -> ModelCard:
    """The card of a new version (numbered when stored): the bundle's own card if it has one,
    else one made from its metadata; labels from ``labelmap`` when given (which also becomes
    the model's label map).
    ``output`` (a region model's paint rule) replaces the card's; a card-less bundle whose
    post-processing ends in a sigmoid is a region model and is refused without one."""
    meta = validate_bundle(model, label=label)
    card = read_card(model, label) if (model / CARD_FILE).exists() else None
    if output is None and card is None and sigmoid_outputs(
        read_json_file(model / INFERENCE_CONFIG, label)
    ):
        regions = ", ".join(channel_names(meta, "outputs", "pred").values()) or "its channels"
        raise XnatMlError(
            f"{label}: its output is sigmoid regions ({regions}), not labels; pass "
            "--paint CHANNEL=VALUE,... painted in order (BraTS TC/WT/ET: 1=2,0=1,2=4)"
        )
    output = output or (card.output if card else Output())
    if labelmap is not None:
        labels = _labels_in(labelmap)
        shutil.copyfile(labelmap, model / LABELMAP_FILE)
    elif card is not None:
        labels = card.labels
    elif (model / LABELMAP_FILE).exists():
        labels = _labels_in(model / LABELMAP_FILE)
    else:
        labels = output_labels(meta, output)
        if len(labels) < 2:
            raise XnatMlError(f"{label}: {METADATA} names no output labels; pass --labelmap FILE")
    if not (model / LABELMAP_FILE).exists():
        (model / LABELMAP_FILE).write_text(
            "".join(f"{n}={v}\n" for v, n in sorted(labels.items()) if v != 0)
        )
    created = datetime.now(UTC).isoformat(timespec="seconds")
    if card is None:
        channels = list(channel_names(meta, "inputs", "image").values()) or ["image"]
        task = str(meta.get("task") or meta.get("name") or name)
        card = ModelCard(name, "", task, labels, channels)
    return dataclasses.replace(card, name=name, version="", labels=labels,
                               output=output, created=created)  # fmt: skip


def install_model(
    session: XNATSession,
    project: str,
    source: Path,
    name: str,
    labelmap: Path | None = None,
    output: Output | None = None,
) -> tuple[int, ModelCard]:
    """Validate the bundle in ``source`` (a folder or a zip) and store it as the next version
    (``output``: the kind of its post-processed output, see ``_install_card``).

    Nothing is uploaded unless the whole model folder validates (links and oversized bundles
    refused); the bundle's files go up as they are, with ``model.json``, the label map and
    ``digests.json`` added."""
    check_name("model", name)
    if not source.exists():
        raise XnatMlError(f"model {source}: no such file or folder")
    if labelmap is not None and not labelmap.is_file():
        raise XnatMlError(f"label map {labelmap}: no such file")
    with scratch.temporary("model-") as tmp:
        bundle = source
        if source.is_file():  # a zip: every member checked before anything is written
            extract_zip(source, Path(tmp) / "unpacked")
            bundle = _bundle_root(Path(tmp) / "unpacked")
        shown = f"bundle {source}"  # not the temporary folder it was unpacked into
        _check_tree(bundle, shown)
        validate_bundle(bundle, label=shown)
        model = Path(tmp) / "model"
        shutil.copytree(bundle, model, ignore=shutil.ignore_patterns("__pycache__", ".*",
                                                                     *UNCOVERED))  # fmt: skip
        write_card(model, _install_card(model, name, labelmap, output, shown))
        return store_version(session, project, model, name)


def store_version(
    session: XNATSession, project: str, model: Path, name: str
) -> tuple[int, ModelCard]:
    """Check the model folder, then store it as ``<name>/v<N>/`` for the next N this writer
    claims on the server (xnat/claims.py); N and the card, which gets that number.

    A retry of the same model after the server was lost meanwhile finishes and reports the
    version its lost attempt claimed."""
    card, _ = validate_model(model, f"model {name}")
    if card.name != name:
        raise XnatMlError(f"model {model}: its card names {card.name}, not {name}")
    files = {p.relative_to(model).as_posix(): p for p in sorted(model.rglob("*")) if p.is_file()}
    unnumbered = dataclasses.replace(card, version="", created="")
    content_id = fingerprint({p: f for p, f in files.items() if p != CARD_FILE},
                             json.dumps(unnumbered.to_json(), sort_keys=True))  # fmt: skip

    def numbered(number: int) -> dict[str, Path]:
        """The version's files once its number is known: the card says that number, and
        ``digests.json`` covers the card as numbered."""
        write_card(model, dataclasses.replace(card, version=str(number)))
        return files | {DIGESTS_FILE: write_digests(model)}

    where = VersionFolders(project, MODELS_RESOURCE, name, content="ML_MODEL")
    number = claims.store_version(session, where, numbered, content_id, default_root())
    return number, dataclasses.replace(card, version=str(number))


def delete_model(session: XNATSession, project: str, name: str, number: int) -> None:
    """Delete ``<name>/v<number>/`` as a whole: one folder DELETE (the embedded server removes
    it in one commit); an XNAT that deletes files only gets them one by one, card first, so
    that the version stops counting before its other files go."""
    folder = file_uri(project, MODELS_RESOURCE, f"{name}/v{number}")
    with reported_as(f"model {name} v{number}"):
        if session.delete(folder, accepted_status=[200, 204, 404]).status_code != 404:
            return
        prefix = f"{name}/v{number}/"
        paths = [p for p in list_paths(session, project, MODELS_RESOURCE) if p.startswith(prefix)]
        for path in sorted(paths, key=lambda p: p != prefix + CARD_FILE):
            session.delete(file_uri(project, MODELS_RESOURCE, path))
