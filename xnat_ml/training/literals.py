"""Values a user puts in a training config (or a model card) are data, never code.

MONAI's parser runs a string starting with ``$`` as Python, follows ``@`` and ``%`` to other ids
and files, and builds (calls) whatever a dict's ``_target_`` names; a config stored in a project
must not reach any of that. So every user value is checked to be a plain literal: numbers
(finite, bounded), true/false, null, strings not starting with those characters, and lists and
objects of them without MONAI's reserved keys. The bundle's own expressions run only from a
digest-checked model version (``digests.py``); xnat-ml's own bindings (the device expression,
the data-parallel overlay) are written by xnat-ml, not read from users.
"""

from __future__ import annotations

import math
import re
from typing import Any

from xnat_ml.errors import XnatMlError
from xnat_ml.training.limits import MAX_JSON_DEPTH, MAX_NUMBER

# monai.bundle.utils: EXPR_KEY "$", ID_REF_KEY "@", MACRO_KEY "%" (a string starting so).
CODE_PREFIXES = ("$", "@", "%")
# ConfigComponent.non_arg_keys (_target_, _requires_, _disabled_, _desc_, _mode_) and the
# parser's _meta_: every key shaped _word_, so a key MONAI adds later is refused as well.
RESERVED_KEY = re.compile(r"_[A-Za-z]+_")


def is_reserved_key(key: str) -> bool:
    return bool(RESERVED_KEY.fullmatch(key))


def check_literal(value: Any, field: str) -> None:
    """Refuse ``value`` unless it is plain data; the error names ``field`` and the place in it."""
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise XnatMlError(f"{field}: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, str):
            if node.startswith(CODE_PREFIXES):
                raise XnatMlError(
                    f"{where}: {node!r:.60} starts with {node[0]!r}, which MONAI would run as "
                    "code or follow as a reference; a config holds plain values only"
                )
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int | float):
            if not math.isfinite(node) or abs(node) > MAX_NUMBER:
                raise XnatMlError(
                    f"{where}: {node!r:.30} is not a finite number of at most {MAX_NUMBER:g}"
                )
        elif isinstance(node, list):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(node))
        elif isinstance(node, dict):
            for key, item in node.items():
                if is_reserved_key(str(key)):
                    raise XnatMlError(
                        f"{where}: key '{key}' is reserved by MONAI (it would build or steer an "
                        "object); a config holds plain values only"
                    )
                stack.append((item, f"{where}.{key}", depth + 1))
        else:
            raise XnatMlError(f"{where}: {type(node).__name__} is not a JSON value")


def check_override_id(config_id: str, field: str) -> None:
    """An override id addresses plain values: no part of it may be a reserved key
    (``network_def#_target_`` would choose the class MONAI builds)."""
    for part in config_id.replace("::", "#").split("#"):
        if is_reserved_key(part):
            raise XnatMlError(
                f"{field}: '{config_id}' sets MONAI's reserved key '{part}'; "
                "a config holds plain values only"
            )


def check_overrides(overrides: dict[str, Any], field: str) -> None:
    """Every id and value of a config's (or a card's) ``overrides``."""
    for config_id, value in overrides.items():
        check_override_id(config_id, field)
        check_literal(value, f"{field}.{config_id}")
