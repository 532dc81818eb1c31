"""Package faces that import their modules on first use (PEP 562).

A stage package re-exports its public names from `__init__`, but `xnat-ml` imports every verb
module (and so every stage package) just to build its parser: an eager face would load numpy,
nibabel or MONAI for `xnat-ml --help`. `lazy_face` maps each public name to the module holding it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_face(
    package: str, exports: dict[str, list[str]]
) -> tuple[Callable[[str], Any], list[str]]:
    """`(__getattr__, __all__)` for `package`: {module (relative): [names]} imported when asked."""
    where = {name: module for module, names in exports.items() for name in names}
    # A submodule, once imported, is an attribute of its package and would hide a name exported
    # under its own name (a function `promote` in module `promote`): refuse such a face.
    clashes = sorted(set(where) & set(exports))
    if clashes:
        raise ValueError(f"{package}: {clashes} name both a module and an export")

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__, sorted(where)
