"""`runs follow`: a run's stored status.json as a live progress bar until the run ends.

The bar counts iterations (status ``iteration`` of ``max_iterations``); its text is the run's
own view (epoch, last loss, last metric, the run's ETA), not tqdm's guess from our polling.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any

from xnat_ml.training.run_folder import FINAL_STATES

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} it{postfix}"


def eta_text(seconds: Any) -> str:
    """``eta_s`` as H:MM:SS (M:SS under an hour); ``?`` when unknown."""
    if not isinstance(seconds, int | float) or seconds < 0:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def postfix(status: dict[str, Any]) -> str:
    """What the bar says after the count: loss, metric (best), ETA."""
    parts = []
    if status.get("loss") is not None:
        parts.append(f"loss {_number(status['loss'])}")
    if status.get("metric") is not None:
        parts.append(f"{status.get('metric_name') or 'metric'} {_number(status['metric'])}")
    if status.get("best_metric") is not None:
        parts.append(f"best {_number(status['best_metric'])}")
    parts.append(f"ETA {eta_text(status.get('eta_s'))}")
    return ", ".join(parts)


def follow_run(
    read: Callable[[], dict[str, Any]],
    run_id: str,
    interval: float,
    out: IO[str] | None = None,
) -> dict[str, Any]:
    """Poll ``read`` (the stored status) every ``interval`` seconds, drawing the bar on ``out``
    (stderr by default); the final status."""
    from tqdm import tqdm

    bar = tqdm(total=0, file=out, bar_format=BAR_FORMAT, dynamic_ncols=True, leave=True)
    try:
        while True:
            status = read()
            total = status.get("max_iterations")
            if isinstance(total, int) and total > 0:
                bar.total = total
            iteration = status.get("iteration")
            if isinstance(iteration, int):
                bar.n = min(iteration, bar.total) if bar.total else iteration
            bar.set_description_str(f"{run_id} {status.get('state')} epoch "
                                    f"{status.get('epoch')}/{status.get('max_epochs')}",
                                    refresh=False)  # fmt: skip
            bar.set_postfix_str(postfix(status), refresh=False)
            bar.refresh()
            if status.get("state") in FINAL_STATES:
                return status
            time.sleep(interval)
    finally:
        bar.close()
