"""Full-state checkpoints: every variable of every network and optimizer plus engine counters.

A checkpoint is one ``.npz`` file written atomically (temporary file in the same folder, fsync,
then ``os.replace``), so a run killed at any moment leaves either the previous checkpoint or the
new one, never a half-written file. Variables are stored in a fixed order per group (network or
optimizer) and checked by shape on restore, so a checkpoint from a different architecture is
refused with a clear message instead of being loaded silently.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from tfmedgan.errors import TfmedganError

_NAME = re.compile(r"^ckpt-(\d{9})\.npz$")


def _to_numpy(variable) -> np.ndarray:
    if hasattr(variable, "numpy"):  # tf.Variable, Keras variable (also wrapping a MirroredVariable)
        return np.asarray(variable.numpy())
    return np.asarray(variable)


def save_checkpoint(
    directory: str | Path,
    step: int,
    groups: Mapping[str, Iterable],
    counters: Mapping[str, float | int],
    keep: int = 2,
) -> Path:
    """Write ``ckpt-<step>.npz`` atomically and delete all but the ``keep`` newest checkpoints.

    Args:
        directory: checkpoint folder (created if missing).
        step: global step the state belongs to.
        groups: name -> list of variables (Keras or tf variables), in a stable order.
        counters: scalar engine state (epoch, step, ...).
        keep: how many checkpoints to keep.
    Returns:
        The path of the new checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for group, variables in groups.items():
        for index, variable in enumerate(variables):
            arrays[f"{group}/{index:05d}"] = _to_numpy(variable)
    for key, value in counters.items():
        arrays[f"counter/{key}"] = np.asarray(value)
    target = directory / f"ckpt-{step:09d}.npz"
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def remove_stale_temporaries(directory: str | Path) -> int:
    """Delete temporary files left by a process killed while writing; returns how many."""
    directory = Path(directory)
    stale = list(directory.glob(".tmp-*")) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def restore_checkpoint(path: str | Path, groups: Mapping[str, list]) -> dict[str, float | int]:
    """Assign the stored values to ``groups`` (same structure as at save time); return counters."""
    path = Path(path)
    try:
        stored = np.load(path)
    except (OSError, ValueError) as error:
        raise TfmedganError(f"cannot read checkpoint {path}: {error}") from None
    with stored:
        for group, variables in groups.items():
            keys = sorted(k for k in stored.files if k.startswith(group + "/"))
            if len(keys) != len(variables):
                raise TfmedganError(
                    f"checkpoint {path.name} holds {len(keys)} variables for {group!r}, the model has "
                    f"{len(variables)}: it was written by a different configuration"
                )
            for key, variable in zip(keys, variables):
                value = stored[key]
                if tuple(value.shape) != tuple(variable.shape):
                    raise TfmedganError(
                        f"checkpoint {path.name}: {group} variable {key} has shape {value.shape}, "
                        f"the model expects {tuple(variable.shape)}"
                    )
                variable.assign(value)
        return {k.split("/", 1)[1]: stored[k].item() for k in stored.files if k.startswith("counter/")}


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint file belongs to (from its name ``ckpt-<step>.npz``)."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise TfmedganError(f"{path} is not a tfmedgan checkpoint file name")
    return int(match.group(1))
