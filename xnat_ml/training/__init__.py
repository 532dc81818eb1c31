"""Training, XNAT-free core: models (bundles + cards), training configs, runs, promotion.

Local folders in, local folders out; the XNAT layer (ML_MODELS, ML_RUNS, ML_CONFIGS, the CLI
verbs) sits on top and uploads what ``RunSync`` hands it. See docs/training.md.
"""

from xnat_ml.lazy import lazy_face

__getattr__, __all__ = lazy_face(__name__, {
    "bundle": ["bundle_digests", "validate_bundle"],
    "config": ["TrainingConfig", "load_config", "parse_config"],
    "model": ["ModelCard", "Ref", "read_card", "validate_model", "write_card"],
    "promotion": ["promote"],
    "run_folder": ["RunFolder", "RunSync"],
    "runner": ["execute_run", "prepare_run"],
})  # fmt: skip
