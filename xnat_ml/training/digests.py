"""``digests.json`` of a model version: what its files were when it was installed or promoted.

A bundle's configs are code (MONAI runs their ``$`` expressions, ``scripts/`` is imported), so a
job runs a bundle only after every file it downloaded matches the digests written in the same
upload as the version: a file changed, missing or added since is refused before anything is
parsed. ``claim.json`` (the version's claim) and ``digests.json`` itself are not covered.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from xnat_ml.errors import XnatMlError
from xnat_ml.training.limits import parse_json

DIGESTS_FILE = "digests.json"
CLAIM_FILE = "claim.json"
ALGORITHM = "sha256"
UNCOVERED = (DIGESTS_FILE, CLAIM_FILE)  # at the version's top only


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def version_files(folder: Path) -> dict[str, Path]:
    """The covered files of a model folder by their path in it (links are not files here)."""
    return {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
        and path.relative_to(folder).as_posix() not in UNCOVERED
    }  # fmt: skip


def write_digests(folder: Path) -> Path:
    """Write ``digests.json`` over every covered file of ``folder`` (about to be uploaded)."""
    files = {name: file_digest(path) for name, path in version_files(folder).items()}
    target = folder / DIGESTS_FILE
    target.write_text(json.dumps({"algorithm": ALGORITHM, "files": files}, indent=1))
    return target


def read_digests(text: str | None, label: str) -> dict[str, str]:
    """The ``files`` map of a version's ``digests.json`` text (None: the version has none)."""
    if text is None:
        raise XnatMlError(
            f"{label}: has no {DIGESTS_FILE} (installed by an older xnat-ml), so its bundle "
            "cannot be verified; install or promote it again as a new version"
        )
    value = parse_json(text, f"{label}: {DIGESTS_FILE}")
    files = value.get("files") if isinstance(value, dict) else None
    if (
        not isinstance(files, dict)
        or value.get("algorithm") != ALGORITHM
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise XnatMlError(f"{label}: {DIGESTS_FILE} is not a {ALGORITHM} digest list")
    return files


def check_files(
    folder: Path, digests: dict[str, str], label: str, *, optional: tuple[str, ...] = ()
) -> None:
    """Every file in ``folder`` as ``digests`` records it, none changed, none added, none missing
    except under the ``optional`` path prefixes (a run's snapshot leaves the weights out)."""
    links = [p for p in folder.rglob("*") if p.is_symlink()]
    if links:
        raise XnatMlError(f"{label}: {links[0].relative_to(folder)} is a link, not a file")
    present = version_files(folder)
    extra = sorted(set(present) - set(digests))
    if extra:
        raise XnatMlError(
            f"{label}: {extra[0]} is not in {DIGESTS_FILE} (added after the version was stored)"
        )
    for name in sorted(digests):
        if name not in present:
            if name.startswith(optional):
                continue
            raise XnatMlError(f"{label}: {name} is missing (recorded in {DIGESTS_FILE})")
        if file_digest(present[name]) != digests[name]:
            raise XnatMlError(
                f"{label}: {name} differs from its digest in {DIGESTS_FILE}; "
                "the version was changed after it was stored"
            )


def check_version(folder: Path, label: str) -> None:
    """A downloaded model version against its own ``digests.json``."""
    path = folder / DIGESTS_FILE
    check_files(
        folder,
        read_digests(path.read_text(errors="replace") if path.is_file() else None, label),
        label,
    )
