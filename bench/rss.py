"""Resident-set-size measurement of the running process, for the benchmarks (Linux only).

The peak RSS (``VmHWM``) of a process is what the memory benchmarks report; it is read from
``/proc/self/status`` and can be reset to the current RSS between phases with
:func:`reset_peak_rss`. The bench scripts are run as ``python bench/NAME.py``, which puts this
folder on ``sys.path``, so they import it as ``import rss``.

Example:
    >>> import rss                                                  # doctest: +SKIP
    >>> rss.reset_peak_rss()                                        # doctest: +SKIP
    True
    >>> run_one_training_step()                                     # doctest: +SKIP
    >>> print(f"step peak {rss.peak_rss_bytes() / 2**30:.2f} GiB")  # doctest: +SKIP
    step peak 3.41 GiB
"""

from __future__ import annotations

import re

__all__ = ["current_rss_bytes", "peak_rss_bytes", "reset_peak_rss"]


def _status_kib(field: str) -> int:
    """One ``kB`` field of ``/proc/self/status`` (e.g. ``VmRSS``), in KiB."""
    with open("/proc/self/status") as stream:
        match = re.search(rf"^{field}:\s+(\d+) kB", stream.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")
    return int(match.group(1))


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux ``VmRSS``)."""
    return 1024 * _status_kib("VmRSS")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since start or the last :func:`reset_peak_rss`
    (Linux ``VmHWM``)."""
    return 1024 * _status_kib("VmHWM")


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0: ``5`` to ``/proc/self/clear_refs``).

    Returns:
        True on success, False where the kernel does not allow it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
    except OSError:
        return False
    return True
