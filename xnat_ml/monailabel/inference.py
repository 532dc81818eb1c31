"""``POST /infer/{model}``: a model version on one image, stored nowhere. The same code path as
``xnat-ml infer``: the digest-checked model cache, ``inference.predict.infer`` (parsed network
kept in memory), the result read onto the series grid; the label volume is then written as the
client asks (NRRD or NIfTI, or a DICOM SEG).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xnat.session import XNATSession

from xnat_ml.datasets.cache import default_root
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.ai_collections import algorithm_name
from xnat_ml.imaging.labelmap import load_labelmap, read_labels
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import Series
from xnat_ml.inference.project_infer import cached_model
from xnat_ml.layout import LABELMAP_FILE
from xnat_ml.monailabel.images import Image
from xnat_ml.monailabel.models import ModelName
from xnat_ml.monailabel.scans import scan_image
from xnat_ml.training.project_models import read_model_card


@dataclass(frozen=True)
class Result:
    labels: np.ndarray  # series grid, NIfTI order
    series: Series
    model_dir: Path
    label_names: dict[str, int]
    latencies: dict[str, float]


def infer_image(
    session: XNATSession, xnat_url: str, project: str, model: ModelName, image: Image, work: Path,
    device: str = "cpu", cache: Path | None = None,
) -> Result:  # fmt: skip
    from xnat_ml.inference.predict import infer

    started = time.perf_counter()
    card = read_model_card(session, project, model.name, model.number)
    if len(card.input_channels) != 1:
        channels = ", ".join(card.input_channels)
        raise XnatMlError(f"model {model}: needs {len(card.input_channels)} input channels "
                          f"({channels}); MONAI Label sends one image")  # fmt: skip
    model_dir = cached_model(session, project, model.name, model.number, cache or default_root())
    nifti, series = scan_image(session, xnat_url, image)
    pre = time.perf_counter()
    prediction = infer(model_dir, [nifti], device)
    prediction.to_filename(work / "prediction.nii.gz")
    labels = read_labels(work / "prediction.nii.gz", series)
    done = time.perf_counter()
    names = {name: int(value) for value, name in card.labels.items() if int(value)}
    latencies = {"pre": round(pre - started, 3), "infer": round(done - pre, 3),
                 "total": round(done - started, 3)}  # fmt: skip
    return Result(labels, series, model_dir, names, latencies)


def write_ai_seg(result: Result, model: ModelName, path: Path) -> Path:
    """The result as the DICOM SEG ``xnat-ml infer`` stores (AUTOMATIC segments)."""
    segments = load_labelmap(result.model_dir / LABELMAP_FILE).segments()
    return write_seg(result.labels, segments, result.series, path,
                     algorithm_name=algorithm_name(model.name, model.number),
                     algorithm_version=str(model.number),
                     series_description=f"{model.name} v{model.number}")  # fmt: skip
