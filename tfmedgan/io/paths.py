"""Checks of output paths given on the command line, with one-line messages.

Example:
    >>> out = check_output_dir("enhanced", overwrite=False)  # doctest: +SKIP
    >>> out.mkdir(parents=True, exist_ok=True)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

from tfmedgan.errors import TfmedganError


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Check that ``path`` can be used as an output folder; nothing is created or removed.

    Accepted: a missing folder (whose nearest existing parent is a folder), an empty folder, or
    a non-empty folder with ``overwrite``.

    Args:
        path: The output folder (OUT_DIR).
        overwrite: The user allowed writing into a non-empty folder (``--overwrite``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TfmedganError: one line: ``X is a file, not a folder`` (also with ``overwrite``: a file is
            never replaced by a folder), a broken symbolic link, a file in place of a parent
            folder, or ``output folder X exists and is not empty (use --overwrite)``.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise TfmedganError(f"{path} is a broken symbolic link, not a folder")
    if path.exists():
        if not path.is_dir():
            raise TfmedganError(f"{path} is a file, not a folder: give a folder for the outputs")
        try:
            empty = next(path.iterdir(), None) is None
        except OSError as error:
            raise TfmedganError(f"cannot read the output folder {path}: {error.strerror}") from None
        if not empty and not overwrite:
            raise TfmedganError(f"output folder {path} exists and is not empty (use --overwrite)")
        return path
    for parent in path.parents:  # the folder will be created: nothing in the way may be a file
        if parent.exists():
            if not parent.is_dir():
                raise TfmedganError(f"cannot create the output folder {path}: {parent} is a file, not a folder")
            break
    return path
