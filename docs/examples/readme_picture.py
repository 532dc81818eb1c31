"""Draw docs/sample-overlay.png, the README's picture: a sample subject's T1w slice with the
grey- and white-matter label map an annotator's ROI collection becomes (xnat-ml sample-data).

    .venv/bin/python docs/examples/readme_picture.py
"""

from pathlib import Path

import numpy as np

from xnat_ml.imaging.overlay import overlay_png
from xnat_ml.sample.anatomy import load_anatomy
from xnat_ml.sample.project import annotator_masks
from xnat_ml.sample.subjects import make_subject, render

volumes = render(make_subject(0), load_anatomy())
masks = annotator_masks(volumes)
labels = np.zeros(volumes.image.shape, np.uint8)
labels[masks["Grey Matter"]] = 1
labels[masks["White Matter"]] = 2
target = Path(__file__).resolve().parents[1] / "sample-overlay.png"
target.write_bytes(overlay_png(volumes.image, labels, size=(480, 480),
                               title="sample S0 T1w: grey matter 1, white matter 2"))
print(target)
