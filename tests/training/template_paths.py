"""Where the training templates are, for the training tests (a module of its own: `from conftest
import ...` would find whichever conftest.py pytest loaded first)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "training_configs"
TISSUES = TEMPLATES / "sample-tissues-cpu"
