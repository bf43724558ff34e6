"""Full-state checkpoints: every variable of every network and optimizer plus engine counters.

A checkpoint is one ``.npz`` file written atomically (temporary file in the same folder, fsync,
then ``os.replace``), so a run killed at any moment leaves either the previous checkpoint or the
new one, never a half-written file. Variables are stored in a fixed order per group (network or
optimizer) and checked by shape on restore, so a checkpoint from a different architecture is
refused with a clear message instead of being loaded silently.

Each checkpoint also carries ``meta/sha256``, a SHA-256 over every stored array (name, dtype,
shape and bytes), written in the same atomic file. :func:`verify_checkpoint` reads the whole file
and recomputes it, so a checkpoint truncated or damaged after it was written (a full disk, a copy
that stopped half way, bit rot) is detected before anything is assigned. Resuming goes through
:func:`restore_newest_valid`, which falls back to the newest checkpoint that verifies. Checkpoints
written before the checksum existed have no ``meta/`` entry; they are accepted when every array
reads cleanly (the zip format's own CRC-32 per member still guards them).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from tfmedgan.errors import TfmedganError

_NAME = re.compile(r"^ckpt-(\d{9})\.npz$")
_CHECKSUM_KEY = "meta/sha256"
DAMAGED_SUFFIX = ".damaged"
# what reading a damaged .npz can raise: truncated or garbage zip, bad CRC, short read, bad header
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


class DamagedCheckpoint(TfmedganError):
    """A checkpoint file that cannot be read completely or whose checksum does not match."""


def _to_numpy(variable) -> np.ndarray:
    if hasattr(variable, "numpy"):  # tf.Variable, Keras variable (also wrapping a MirroredVariable)
        return np.asarray(variable.numpy())
    return np.asarray(variable)


def _payload_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every non-meta array: its name, dtype, shape and bytes, in sorted name order."""
    digest = hashlib.sha256()
    for key in sorted(k for k in arrays if not k.startswith("meta/")):
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.reshape(-1).view(np.uint8))
    return digest.hexdigest()


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
    arrays[_CHECKSUM_KEY] = np.asarray(_payload_digest(arrays))
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


def _read_verified(path: Path) -> dict[str, np.ndarray]:
    """Every array of the checkpoint, after checking it reads completely and matches its checksum.

    Raises:
        DamagedCheckpoint: with a short reason, when the file is truncated, not an npz, has a bad
            member or a checksum that does not match.
    """
    try:
        if not zipfile.is_zipfile(path):
            raise DamagedCheckpoint(f"{path.name}: not a complete npz archive (truncated or overwritten)")
        stored = np.load(path, allow_pickle=False)
    except _READ_ERRORS as error:
        raise DamagedCheckpoint(f"{path.name}: {_reason(error)}") from None
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise DamagedCheckpoint(f"{path.name}: not an npz archive")
    with stored:
        try:
            arrays = {key: stored[key] for key in stored.files}
        except _READ_ERRORS as error:
            raise DamagedCheckpoint(f"{path.name}: {_reason(error)}") from None
    if _CHECKSUM_KEY in arrays:
        if str(arrays[_CHECKSUM_KEY]) != _payload_digest(arrays):
            raise DamagedCheckpoint(f"{path.name}: checksum mismatch (the content changed after it was written)")
    elif not arrays:
        raise DamagedCheckpoint(f"{path.name}: empty archive")
    return arrays


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def verify_checkpoint(path: str | Path, raise_reason: bool = False) -> bool:
    """Whether ``path`` is a complete, readable checkpoint whose checksum matches.

    Reads the whole file. A checkpoint written before checksums existed passes when every array
    reads cleanly.

    Args:
        path: a ``ckpt-*.npz`` file.
        raise_reason: raise :class:`DamagedCheckpoint` (a :class:`TfmedganError` with a one-line
            reason) instead of returning ``False``.
    """
    try:
        _read_verified(Path(path))
    except DamagedCheckpoint:
        if raise_reason:
            raise
        return False
    return True


def latest_valid_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint in ``directory`` that passes :func:`verify_checkpoint`, or None."""
    for path in reversed(list_checkpoints(directory)):
        if verify_checkpoint(path):
            return path
    return None


def _assign(path: Path, arrays: Mapping[str, np.ndarray], groups: Mapping[str, list]) -> dict[str, float | int]:
    # check every shape before assigning anything, so a refused checkpoint changes no variable
    plan = []
    for group, variables in groups.items():
        keys = sorted(k for k in arrays if k.startswith(group + "/"))
        if len(keys) != len(variables):
            raise TfmedganError(
                f"checkpoint {path.name} holds {len(keys)} variables for {group!r}, the model has "
                f"{len(variables)}: it was written by a different configuration"
            )
        for key, variable in zip(keys, variables):
            value = arrays[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise TfmedganError(
                    f"checkpoint {path.name}: {group} variable {key} has shape {value.shape}, "
                    f"the model expects {tuple(variable.shape)}"
                )
            plan.append((variable, value))
    for variable, value in plan:
        variable.assign(value)
    return {k.split("/", 1)[1]: arrays[k].item() for k in arrays if k.startswith("counter/")}


def restore_checkpoint(path: str | Path, groups: Mapping[str, list]) -> dict[str, float | int]:
    """Assign the stored values to ``groups`` (same structure as at save time); return counters.

    The file is verified first; a damaged one raises :class:`DamagedCheckpoint` (one line) and
    leaves every variable unchanged.
    """
    path = Path(path)
    try:
        arrays = _read_verified(path)
    except DamagedCheckpoint as error:
        raise DamagedCheckpoint(f"cannot read checkpoint {path.parent}/{error}") from None
    return _assign(path, arrays, groups)


def restore_newest_valid(
    directory: str | Path, groups: Mapping[str, list], quarantine: bool = True
) -> tuple[Path, dict[str, float | int]] | None:
    """Restore the newest checkpoint that verifies, falling back past damaged ones.

    Prints one warning line to stderr naming the damaged checkpoint(s) and the one used. With
    ``quarantine`` a damaged file is renamed ``<name>.damaged`` (kept for inspection, no longer
    listed), so pruning after the next save cannot delete a good checkpoint in favour of it.

    Args:
        directory: checkpoint folder.
        groups: name -> variables, as given to :func:`save_checkpoint`.
        quarantine: rename damaged checkpoints out of the way.
    Returns:
        ``(path, counters)`` of the restored checkpoint, or None when the folder holds none.
    Raises:
        TfmedganError: one line, when checkpoints exist but none is readable, or when the readable
            one was written by a different configuration.
    """
    candidates = list(reversed(list_checkpoints(directory)))
    if not candidates:
        return None
    damaged: list[tuple[Path, str]] = []
    for path in candidates:
        try:
            arrays = _read_verified(path)
        except DamagedCheckpoint as error:
            damaged.append((path, str(error).split(": ", 1)[-1]))
            continue
        counters = _assign(path, arrays, groups)
        if damaged:
            names = ", ".join(f"{p.name} ({why})" for p, why in damaged)
            kept = f"; renamed to *{DAMAGED_SUFFIX}" if quarantine else ""
            print(f"warning: damaged checkpoint {names}{kept}; resuming from {path.name}", file=sys.stderr)
            if quarantine:
                _quarantine(p for p, _ in damaged)
        return path, counters
    names = ", ".join(f"{p.name} ({why})" for p, why in damaged)
    raise TfmedganError(
        f"no readable checkpoint in {Path(directory)}: {names}; restore a copy of the run or start a new one"
    )


def _quarantine(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            os.replace(path, path.with_name(path.name + DAMAGED_SUFFIX))
        except OSError:  # e.g. already moved by another worker of the same run: nothing to do
            pass


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint file belongs to (from its name ``ckpt-<step>.npz``)."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise TfmedganError(f"{path} is not a tfmedgan checkpoint file name")
    return int(match.group(1))
