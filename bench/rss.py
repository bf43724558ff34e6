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

import json
import re
import subprocess
import sys
import time

__all__ = ["available_gib", "current_rss_bytes", "peak_rss_bytes", "reset_peak_rss", "run_worker", "variant_name"]


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


# -- one configuration per process (so that its peak RSS is that configuration's) ------------------
def run_worker(script: str, arguments: list) -> dict:
    """Run ``python SCRIPT --worker JSON(arguments)`` and return the last JSON line it printed,
    plus ``wall_seconds``; a failure gives ``{"error": <last stderr line>, "arguments": ...}``."""
    started = time.perf_counter()
    process = subprocess.run([sys.executable, script, "--worker", json.dumps(arguments)], capture_output=True, text=True)
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode or not lines:
        tail = (process.stderr.strip().splitlines() or [f"exit status {process.returncode}"])[-1]
        return {"error": f"{tail} (exit status {process.returncode})", "arguments": arguments}
    result = json.loads(lines[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def available_gib() -> float:
    """``MemAvailable`` of the machine in GiB (infinity where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def variant_name(row: dict) -> str:
    """``precision[+recompute]`` of a result row."""
    return row["precision"] + ("+recompute" if row["recompute"] else "")
