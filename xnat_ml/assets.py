"""The command JSONs, Event Service subscriptions and training config templates xnat-ml ships,
wherever it is installed.

In a source checkout they are the repository's command_json/, event_handlers/ and
training_configs/; a wheel carries the same files under <prefix>/share/xnat-ml/ (setup.cfg
data_files), so that `xnat-ml events install` and the templates work from `pip install xnat-ml`
and inside the container image.
"""

from __future__ import annotations

import sys
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parents[1]
_INSTALLED_ROOT = Path(sys.prefix) / "share" / "xnat-ml"


def shipped_dir(name: str) -> Path:
    """The folder `name` (command_json, event_handlers, training_configs): the checkout's, else
    the installed one.

    When neither exists the checkout's path is returned, so callers name it in their error.
    """
    for root in (_SOURCE_ROOT, _INSTALLED_ROOT):
        if (root / name).is_dir():
            return root / name
    return _SOURCE_ROOT / name
