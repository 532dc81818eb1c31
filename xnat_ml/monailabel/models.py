"""The project's model versions under MONAI Label's names: ``NAME`` is a model's latest version,
``NAME_vN`` its version N; what ``/info/`` lists for each (type, labels, dimension, description
from the card).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.training.project_models import list_models, read_model_card

_VERSIONED = re.compile(r"(.+)_v([1-9][0-9]{0,8})")


class UnknownModel(XnatMlError):
    """No model version of the project has that name (answered 404)."""


@dataclass(frozen=True)
class ModelName:
    name: str
    number: int

    def __str__(self) -> str:
        return f"{self.name} v{self.number}"


def resolve(versions: dict[str, list[int]], text: str, allowed: list[str] | None) -> ModelName:
    """``NAME`` (latest) or ``NAME_vN`` of the project's models; only those ``--models`` named,
    when it named some."""
    name, number = text, None
    if text not in versions and (match := _VERSIONED.fullmatch(text)):
        name, number = match[1], int(match[2])
    numbers = [n for n in versions.get(name, []) if _served(allowed, name, n)]
    if not numbers or (number is not None and number not in numbers):
        raise UnknownModel(f"model {text[:200]!r}: not a model version served here")
    return ModelName(name, number or numbers[-1])


def _served(allowed: list[str] | None, name: str, number: int) -> bool:
    return not allowed or any(a in (name, f"{name}:{number}") for a in allowed)


def served(
    session: XNATSession, project: str, allowed: list[str] | None
) -> tuple[dict[str, list[int]], dict[str, dict]]:
    """(versions per model, ``/info/``'s ``models``)."""
    versions = list_models(session, project)
    infos: dict[str, dict] = {}
    for name, numbers in versions.items():
        for number in numbers:
            if not _served(allowed, name, number):
                continue
            card = read_model_card(session, project, name, number)
            info = {"type": "segmentation", "dimension": 3,
                    "labels": {n: int(v) for v, n in sorted(card.labels.items()) if int(v)},
                    "description": card.task or f"{name} v{number}",
                    "config": {}, "version": number}  # fmt: skip
            infos[f"{name}_v{number}"] = info
            infos[name] = info  # the latest wins: numbers are oldest first
    return versions, infos
