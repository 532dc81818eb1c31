"""TorchScript export of a model's network (``model.ts``, as Model Zoo bundles ship it).

Scripted like MONAI's ``ckpt_export`` (traced when scripting fails), with the bundle's
``metadata.json`` and ``inference.json`` inside as extra files; written atomically and kept only
when the file, loaded back, gives the same outputs as the network on a sample input.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnat_ml.atomic import write_atomic
from xnat_ml.errors import XnatMlError
from xnat_ml.inference.predict import load_model
from xnat_ml.training.bundle import INFERENCE_CONFIG, METADATA, read_json_file
from xnat_ml.training.model import channel_names

log = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.ts"
_RTOL, _ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class Exported:
    """The written file and its check: the sample input's shape and the largest difference
    between the loaded file's outputs and the network's on it."""

    path: Path
    input_shape: tuple[int, ...]
    max_abs_difference: float


def export_torchscript(
    model_dir: str | Path, target: str | Path, *, spatial_shape: Sequence[int] | None = None,
    device: str = "cpu",
) -> Exported:
    """Write the TorchScript of ``model_dir``'s network to ``target`` (a file).

    The sample input is one random image of the model's input channels and ``spatial_shape``
    (default: its metadata's, e.g. 96^3). Nothing is left at ``target`` when the check fails.
    The caller must have verified the model version's digests: loading runs the bundle's code."""
    import torch

    model = load_model(model_dir, device)
    meta = read_json_file(model.folder / METADATA, f"model {model.folder}")
    shape = list(spatial_shape or _metadata_shape(meta, model.folder))
    channels = len(channel_names(meta, "inputs", "image")) or len(model.card.input_channels)
    sample = torch.randn(1, channels, *shape, generator=torch.Generator().manual_seed(0))
    sample = sample.to(model.device)
    scripted = _script(model.network, sample, model.folder)
    buffer = io.BytesIO()
    extra = {name.rpartition("/")[2]: (model.folder / name).read_bytes()
             for name in (METADATA, INFERENCE_CONFIG)}  # fmt: skip
    torch.jit.save(scripted, buffer, _extra_files=extra)
    with torch.no_grad():
        expected = model.network(sample)
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()), map_location=model.device)
        got = loaded(sample)
    worst = float((got - expected).abs().max())
    if not torch.allclose(got, expected, rtol=_RTOL, atol=_ATOL):
        raise XnatMlError(f"model {model.card.name}: its TorchScript gives other outputs than "
                          f"the network (largest difference {worst:.3g})")  # fmt: skip
    path = write_atomic(target, lambda handle: handle.write(buffer.getvalue()))
    return Exported(path, tuple(sample.shape), worst)


def _metadata_shape(meta: dict[str, Any], folder: Path) -> list[int]:
    fmt = meta.get("network_data_format", {}).get("inputs", {}).get("image", {})
    shape = fmt.get("spatial_shape")
    if not (isinstance(shape, list) and shape and all(type(s) is int and s > 0 for s in shape)):
        raise XnatMlError(f"model {folder}: {METADATA} gives no input spatial_shape; "
                          "pass the sample's spatial shape")  # fmt: skip
    return shape


def _script(network: Any, sample: Any, folder: Path) -> Any:
    """``torch.jit.script`` of the network; a trace on ``sample`` when it cannot be scripted."""
    import torch

    try:
        return torch.jit.script(network)
    except Exception as exc:  # scripting fails on many plain-Python modules: trace instead
        log.info("model %s: cannot be scripted (%s); tracing it on the sample input",
                 folder, str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
        with torch.no_grad():
            return torch.jit.trace(network, sample)
