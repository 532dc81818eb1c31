"""Training, XNAT-free core: models (bundles + cards), training configs, runs, promotion.

Local folders in, local folders out; the XNAT layer (ML_MODELS, ML_RUNS, ML_CONFIGS, the CLI
verbs) sits on top and uploads what ``RunSync`` hands it. See docs/training.md.
"""

from xnat_ml.training.bundle import bundle_digests, validate_bundle
from xnat_ml.training.config import TrainingConfig, load_config, parse_config
from xnat_ml.training.model import (
    ModelCard,
    Ref,
    read_card,
    validate_model,
    write_card,
)
from xnat_ml.training.promote import promote
from xnat_ml.training.run_folder import RunFolder, RunSync
from xnat_ml.training.runner import execute_run, prepare_run

__all__ = [
    "ModelCard",
    "Ref",
    "RunFolder",
    "RunSync",
    "TrainingConfig",
    "bundle_digests",
    "execute_run",
    "load_config",
    "parse_config",
    "prepare_run",
    "promote",
    "read_card",
    "validate_bundle",
    "validate_model",
    "write_card",
]
