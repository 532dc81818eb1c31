"""Run a model folder's bundle on NIfTI files: its own ``inference.json`` (pre-processing,
inferer, post-processing) with the card's ``overrides``, in memory.

The bundle's ``SaveImage`` steps are dropped (the result is returned, not written), and the
``evaluator``/``dataloader`` ids are never built: one case goes through the parsed pieces
directly. The parsed network stays loaded per model folder and device, so a second call is warm.

Parsing a bundle runs its code (``$`` expressions, ``scripts/``): call this only on a model
version whose digests were verified first (``ML_MODELS/<name>/v<N>/digests.json``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from xnat_ml.errors import XnatMlError
from xnat_ml.inference.grid import onto_source
from xnat_ml.inference.labels import to_labels
from xnat_ml.training.bundle import INFERENCE_CONFIG, METADATA, WEIGHTS
from xnat_ml.training.model import ModelCard, read_card, weights_path

_PIECES = ("preprocessing", "inferer", "postprocessing")
_SAVE_TRANSFORMS = ("SaveImage", "SaveImaged")
_parse_lock = threading.Lock()  # sys.path and the `scripts` package are process-wide


@dataclass(frozen=True)
class LoadedModel:
    """A model folder's parsed bundle, ready for one case after another."""

    folder: Path
    card: ModelCard
    network: Any  # torch.nn.Module, in eval mode, on ``device``
    device: Any  # torch.device
    image_key: str
    preprocessing: Any
    inferer: Any
    postprocessing: Any  # without its SaveImage steps


def load_model(model_dir: str | Path, device: str = "cpu") -> LoadedModel:
    """The parsed bundle of ``model_dir`` on ``device`` ("cpu", "cuda", "cuda:1"), cached.

    The caller must have verified the model version's digests: parsing runs the bundle's code."""
    return _load(Path(model_dir).resolve(), str(device))


@lru_cache(maxsize=8)
def _load(folder: Path, device_name: str) -> LoadedModel:
    import torch
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    card = read_card(folder)  # checked whole at install; inference needs no train.json
    device = torch.device(device_name)
    parser = ConfigParser()
    parser.read_config(str(folder / INFERENCE_CONFIG))
    parser.read_meta(str(folder / METADATA))
    for config_id, value in card.overrides.items():
        parent = config_id.replace("::", "#").rpartition("#")[0]
        if parent and parent not in parser:
            raise XnatMlError(f"model {folder}: override '{config_id}' has no parent id "
                              f"'{parent}' in {INFERENCE_CONFIG}")  # fmt: skip
        parser[config_id] = value
    parser["bundle_root"] = str(folder)
    parser["device"] = device
    for piece in ("network_def", *_PIECES):
        if piece not in parser:
            raise XnatMlError(f"model {folder}: {INFERENCE_CONFIG} has no '{piece}'")
    try:
        with _parse_lock, _bundle_scripts(folder):
            network = parser.get_parsed_content("network_def").to(device)
            pieces = {piece: parser.get_parsed_content(piece) for piece in (*_PIECES, "image_key")
                      if piece in parser}  # fmt: skip
    except Exception as exc:  # a bundle's expressions and targets fail in any way
        raise XnatMlError(f"model {folder}: {INFERENCE_CONFIG} does not build "
                          f"({_first_line(exc)})") from exc  # fmt: skip
    state = torch.load(weights_path(folder), map_location=device, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a CheckpointLoader-style {"model": state_dict}
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise XnatMlError(f"model {folder}: {WEIGHTS} does not fit its network "
                          f"({_first_line(exc)})") from exc  # fmt: skip
    network.eval()
    post = pieces["postprocessing"]
    kept = [t for t in getattr(post, "transforms", [post])
            if type(t).__name__ not in _SAVE_TRANSFORMS]  # fmt: skip
    return LoadedModel(folder, card, network, device, str(pieces.get("image_key", "image")),
                       pieces["preprocessing"], pieces["inferer"], Compose(kept))  # fmt: skip


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@contextmanager
def _bundle_scripts(folder: Path) -> Iterator[None]:
    """The bundle folder first on ``sys.path`` while it is parsed, so ``scripts.x`` is its own
    (a ``scripts`` package of another bundle imported earlier is forgotten first)."""
    if not (folder / "scripts").is_dir():
        yield
        return
    for name in [n for n in sys.modules if n == "scripts" or n.startswith("scripts.")]:
        del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def infer(
    model_dir: str | Path, images: Sequence[str | Path], device: str = "cpu"
) -> nib.Nifti1Image:
    """The model's label volume for one case: ``images`` are its input channel NIfTI files in
    the card's ``input_channels`` order. The result is on the first channel's grid (shape and
    affine), integer labels, whatever the model's own spacing and orientation.

    The caller must have verified the model version's digests: this runs the bundle's code."""
    import torch

    model = load_model(model_dir, device)
    channels = model.card.input_channels
    if len(images) != len(channels):
        raise XnatMlError(f"model {model.card.name}: needs {len(channels)} input channels "
                          f"({', '.join(channels)}), got {len(images)}")  # fmt: skip
    source = _check_channels(channels, images)
    key = model.image_key
    data = model.preprocessing({key: str(images[0]) if len(images) == 1 else
                                [str(p) for p in images]})  # fmt: skip
    with torch.inference_mode():
        batch = data[key].unsqueeze(0).to(model.device)
        data["pred"] = model.inferer(batch, model.network)[0]
        data = model.postprocessing(data)
    pred = data["pred"]
    affine = _affine_of(pred, data[key])
    array = pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred)
    return onto_source(to_labels(array, model.card.output, model.card.name), affine, source)


def _check_channels(channels: Sequence[str], images: Sequence[str | Path]) -> nib.Nifti1Image:
    """The first channel's image, once every channel is a readable NIfTI on its grid."""
    loaded = []
    for channel, path in zip(channels, images, strict=True):
        if not Path(path).is_file():
            raise XnatMlError(f"input channel {channel}: {path}: no such file")
        try:
            loaded.append(nib.load(str(path)))
        except Exception as exc:  # nibabel's own and the decompressor's errors
            raise XnatMlError(f"input channel {channel}: {path}: not a readable NIfTI "
                              f"({_first_line(exc)})") from exc  # fmt: skip
        first, image = loaded[0], loaded[-1]
        if image.shape[:3] != first.shape[:3] or not np.allclose(image.affine, first.affine,
                                                                 atol=1e-3):  # fmt: skip
            raise XnatMlError(f"input channel {channel}: {path}: not on the grid of "
                              f"{channels[0]} (shape {image.shape[:3]} vs {first.shape[:3]}, "
                              "or another affine); register the channels first")  # fmt: skip
    return loaded[0]


def _affine_of(pred: Any, image: Any) -> np.ndarray:
    """The voxel-to-world affine of the post-processed prediction (a MetaTensor's own, else
    the pre-processed image's, which it shares when nothing inverted it)."""
    for item in (pred, image):
        affine = getattr(item, "affine", None)
        if affine is not None:
            return np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine,
                              dtype=np.float64)  # fmt: skip
    raise XnatMlError("the bundle's post-processing lost the image's affine")
