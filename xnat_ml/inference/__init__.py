"""Inference, XNAT-free core: a model folder's bundle run on NIfTI files, its output made one
label volume on the source grid, scores against a reference, TorchScript export.

Plain files in, plain data out; the XNAT verbs (`xnat-ml infer`, `model evaluate`, `model
export`) come on top. See docs/inference.md.
"""

from xnat_ml.lazy import lazy_face

__getattr__, __all__ = lazy_face(__name__, {
    "export": ["Exported", "export_torchscript"],
    "evaluation": ["Case", "evaluate", "markdown_table", "write_evaluation"],
    "metrics": ["LabelScores", "label_scores"],
    "grid": ["onto_source"],
    "labels": ["paint_regions", "to_labels"],
    "predict": ["LoadedModel", "infer", "load_model"],
})  # fmt: skip
