"""``latest.pt``: everything a relaunched run needs to go on where the last one stopped.

Weights, optimiser, LR scheduler, AMP scaler, the trainer's epoch and iteration, the best metric
so far, and every RNG (torch, CUDA, numpy, Python, and each random transform's own generator),
so a resumed run with the same seed repeats what the dead one would have done. Saved tensors
only, so it loads with ``weights_only=True``: a checkpoint from storage cannot run code.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xnat_ml.atomic import write_bytes_atomic
from xnat_ml.errors import XnatMlError

if TYPE_CHECKING:
    import torch


@dataclass
class Trainables:
    """The live objects a checkpoint saves and restores."""

    network: torch.nn.Module
    optimizer: Any
    lr_scheduler: Any = None
    scaler: Any = None
    randomizables: list[Any] = field(default_factory=list)  # MONAI Randomizable transforms


def random_transforms(transform: Any) -> list[Any]:
    """Every MONAI ``Randomizable`` inside a transform, in a stable order: the items of nested
    Composes and the inner transforms a dictionary transform keeps (``RandScaleIntensityd``
    draws from its inner ``RandScaleIntensity``'s generator)."""
    from monai.transforms import Randomizable, Transform

    found, seen, pending = [], set(), [transform]
    while pending:
        item = pending.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Randomizable):
            found.append(item)
        pending.extend(getattr(item, "transforms", None) or ())
        pending.extend(v for v in getattr(item, "__dict__", {}).values()
                       if isinstance(v, Randomizable | Transform))  # fmt: skip
    return found


def _numpy_state(state: tuple) -> list:
    import torch

    name, keys, pos, has_gauss, cached = state
    return [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached]


def _as_numpy_state(saved: list) -> tuple:
    name, keys, pos, has_gauss, cached = saved
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached


def _rng_state(trainables: Trainables) -> dict[str, Any]:
    import torch

    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": _numpy_state(np.random.get_state()),
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "transforms": [_numpy_state(t.R.get_state()) for t in trainables.randomizables],
    }


def _restore_rng(saved: dict[str, Any], trainables: Trainables) -> None:
    import torch

    torch.set_rng_state(saved["torch"])
    if saved["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])
    np.random.set_state(_as_numpy_state(saved["numpy"]))
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    if len(saved["transforms"]) == len(trainables.randomizables):
        for transform, state in zip(trainables.randomizables, saved["transforms"], strict=True):
            transform.R.set_state(_as_numpy_state(state))


def save_latest(
    path: Path, trainables: Trainables, epoch: int, iteration: int, best: dict[str, Any]
) -> None:
    import torch

    state = {
        "network": trainables.network.state_dict(),
        "optimizer": trainables.optimizer.state_dict(),
        "lr_scheduler": trainables.lr_scheduler.state_dict() if trainables.lr_scheduler else None,
        "scaler": trainables.scaler.state_dict() if trainables.scaler else None,
        "trainer": {"epoch": epoch, "iteration": iteration},
        "best": best,
        "rng": _rng_state(trainables),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_latest(path: Path, trainables: Trainables) -> dict[str, Any]:
    """Restore the objects from ``latest.pt``; return its ``trainer`` and ``best`` entries.

    The caller sets the trainer's epoch and iteration only: restoring the whole ignite state
    would also restore the checkpoint's max_epochs (MONAI issue 1757)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        trainables.network.load_state_dict(state["network"])
        trainables.optimizer.load_state_dict(state["optimizer"])
        if trainables.lr_scheduler is not None and state["lr_scheduler"] is not None:
            trainables.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if trainables.scaler is not None and state["scaler"] is not None:
            trainables.scaler.load_state_dict(state["scaler"])
        _restore_rng(state["rng"], trainables)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise XnatMlError(f"checkpoint {path}: cannot resume from it: {exc}") from None
    return {"trainer": state["trainer"], "best": state["best"]}


def save_weights(path: Path, network: torch.nn.Module) -> None:
    """The network's state dict alone, as Model Zoo bundles ship ``models/model.pt``."""
    import torch

    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_weights(path: Path, network: torch.nn.Module) -> None:
    """Load a bundle's ``model.pt`` (a bare state dict, or ``{"model": ...}``) into ``network``."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and set(state) == {"model"}:
            state = state["model"]
        network.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise XnatMlError(f"weights {path}: do not fit the bundle's network: {first}") from None
