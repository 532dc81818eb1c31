"""The caps on what a training config and a bundle may ask, and JSON read within them.

A config or bundle comes from a project's storage, so a hostile one must cost a one-line refusal,
not hours of training, a machine's memory or a ``RecursionError`` traceback. The caps sit far
above any real training (docs/training.md lists them).
"""

from __future__ import annotations

import json
from typing import Any

from xnat_ml.errors import XnatMlError

MAX_JSON_DEPTH = 64  # levels of nested objects and lists in a config or a bundle's JSON file
MAX_EPOCHS = 100_000
MAX_ITERATIONS = 10_000_000  # epochs x iterations per epoch of one run
MAX_BATCH_SIZE = 4096
MAX_PATCH_SIZE = 4096  # voxels along one axis
MAX_WORKERS = 64  # data-loading processes
MAX_PROCESSES = 64  # data-parallel training processes
MAX_GPUS = 64
MAX_CPUS = 1024
MAX_MEMORY_GB = 4096.0
MAX_LEARNING_RATE = 10.0
MAX_NUMBER = 1e15  # magnitude of any number in overrides
MAX_BUNDLE_BYTES = 8 << 30  # a bundle at `model install`, all files together
MAX_BUNDLE_FILES = 10_000


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def parse_json(text: str, what: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity and nesting deeper than ``MAX_JSON_DEPTH``, each
    as one line starting with ``what`` (the file's name)."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise XnatMlError(
            f"{what} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:
        raise XnatMlError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # NaN/Infinity, or an integer of thousands of digits
        raise XnatMlError(f"{what} is not usable JSON ({exc})") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise XnatMlError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def json_depth(value: Any) -> int:
    """Levels of nested dicts and lists (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:  # deeper is refused anyway: stop counting
            stack.extend((child, depth + 1) for child in children)
    return deepest
