"""What the CPU computes natively, read from its flags; imports no TensorFlow (the bench's parent
process uses it)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

#: CPU feature flags (Linux ``/proc/cpuinfo``) of native bfloat16 arithmetic: x86 AVX512-BF16 and
#: AMX-BF16, Arm's BF16 extension.
NATIVE_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_native_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes in bfloat16 natively, from the flags of ``cpuinfo``.

    Returns ``None`` when it cannot tell (no such file: not Linux). Without native support
    TensorFlow emulates bfloat16 through float32: on a 2-core AMD EPYC with AVX2 only, a forward and
    backward pass of the CPU preset's 3D generator on a 48^3 crop took 10.5x the CPU time in
    ``mixed_bfloat16`` as in float32 (41 against 4.0 CPU-seconds, oneDNN on; 43.7 against 7.7 with
    it off); on an AMX machine bfloat16 is 1.1-1.9x faster than float32.

    Example:
        >>> cpu_has_native_bfloat16("/no/such/file") is None
        True
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    if not flags:
        return None
    return bool(flags & NATIVE_BFLOAT16_FLAGS)


#: The environment variable with which TensorFlow turns its oneDNN CPU kernels on ("1") or off ("0").
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def use_onednn_by_default(environ: dict[str, str] | None = None, machine: str | None = None) -> bool:
    """Turn TensorFlow's oneDNN CPU kernels on when the user has not chosen, on x86-64.

    TensorFlow 2.21 turns oneDNN on by itself only on x86 CPUs with AVX-512 or AMX; on a CPU with
    AVX2 only (an AMD EPYC, older Intel) it runs its Eigen kernels, which are much slower for 3D
    convolutions. Measured side by side on a 2-core AMD EPYC (AVX2, float32, one process each,
    ``bench/bench_onednn.py``): a small 3D encoder-decoder's forward and backward pass took 2.9-3.9x
    less CPU time with oneDNN, and a whole step of the 3D CycleGAN's CPU preset 1.6-1.7x less.

    Must run before TensorFlow is imported (it reads the variable once, at start-up); ``tfmedgan``
    calls it on import. A value the user set, ``0`` included, is left alone.

    Args:
        environ: the environment to change; ``os.environ`` by default.
        machine: the processor architecture; ``platform.machine()`` by default.

    Returns:
        Whether the variable was set here.

    Example:
        >>> environ = {}
        >>> use_onednn_by_default(environ, machine="x86_64"), environ
        (True, {'TF_ENABLE_ONEDNN_OPTS': '1'})
        >>> use_onednn_by_default({"TF_ENABLE_ONEDNN_OPTS": "0"}, machine="x86_64")
        False
    """
    environ = os.environ if environ is None else environ
    machine = platform.machine() if machine is None else machine
    if ONEDNN_VARIABLE in environ or machine.lower() not in ("x86_64", "amd64"):
        return False
    if environ is os.environ and "tensorflow" in sys.modules:  # too late: TensorFlow read it already
        return False
    environ[ONEDNN_VARIABLE] = "1"
    return True
