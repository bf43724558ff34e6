"""Optional Neptune logging (config, per-step losses, sample grids).

Project and token come from ``NEPTUNE_PROJECT`` and ``NEPTUNE_API_TOKEN``, never from a file in the
working directory. ``NEPTUNE_MODE=offline`` (or ``debug``) works with no token and no network.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from tfmedgan.errors import TfmedganError


def check_neptune_settings() -> str:
    """Raise TfmedganError when Neptune logging cannot start; return the mode. Cheap: call it
    before creating the run directory so a missing token does not leave an empty run behind."""
    mode = os.environ.get("NEPTUNE_MODE", "async")
    if mode not in ("offline", "debug", "read-only") and not os.environ.get("NEPTUNE_API_TOKEN"):
        raise TfmedganError(
            "-n/--neptune needs NEPTUNE_API_TOKEN and NEPTUNE_PROJECT in the environment "
            "(or NEPTUNE_MODE=offline to log locally and sync later)"
        )
    import importlib.util

    if importlib.util.find_spec("neptune") is None:
        raise TfmedganError("-n/--neptune needs the neptune package: pip install neptune")
    return mode


class NeptuneLogger:
    """Thin wrapper around a ``neptune`` run; all methods are no-ops when disabled."""

    def __init__(self, enabled: bool, config: Mapping[str, Any] | None = None, run_dir: str | None = None):
        self.run = None
        if not enabled:
            return
        mode = check_neptune_settings()
        import neptune
        self.run = neptune.init_run(
            project=os.environ.get("NEPTUNE_PROJECT"),
            api_token=os.environ.get("NEPTUNE_API_TOKEN"),
            mode=mode,
            name=os.path.basename(run_dir) if run_dir else None,
            capture_hardware_metrics=False,
        )
        if config:
            self.run["parameters"] = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}

    def log_losses(self, step: int, losses: Mapping[str, float]) -> None:
        if self.run is None:
            return
        for name, value in losses.items():
            self.run[f"train/{name}"].append(float(value), step=step)

    def log_scalar(self, name: str, value: float, step: int) -> None:
        if self.run is not None:
            self.run[name].append(float(value), step=step)

    def log_image(self, name: str, image: np.ndarray, description: str = "") -> None:
        if self.run is None:
            return
        from neptune.types import File

        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        self.run[name].append(File.as_image(array), description=description)

    def stop(self) -> None:
        if self.run is not None:
            self.run.stop()
            self.run = None
