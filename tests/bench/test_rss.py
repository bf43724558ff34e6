"""Tests for bench/rss.py (process RSS measurement used by the memory benchmarks; Linux only)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


@pytest.fixture(scope="module")
def rss():
    """bench/rss.py loaded from its file (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_rss", BENCH / "rss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_follows_an_allocation_and_resets(rss):
    size = 64 * 2**20
    before = rss.current_rss_bytes()
    assert before > 0 and rss.peak_rss_bytes() >= before
    block = np.ones(size, np.uint8)  # touched: resident
    assert rss.current_rss_bytes() >= before + size // 2
    peak_with_block = rss.peak_rss_bytes()
    assert peak_with_block >= before + size // 2
    del block
    if not rss.reset_peak_rss():
        pytest.skip("this kernel does not allow resetting the peak RSS")
    # after the reset the peak is the current RSS again, below the peak that held the block
    assert rss.peak_rss_bytes() < peak_with_block
    assert rss.peak_rss_bytes() >= rss.current_rss_bytes() - 2**20


def test_missing_field_is_a_clear_error(rss):
    with pytest.raises(RuntimeError, match="no NoSuchField"):
        rss._status_kib("NoSuchField")


def test_engine_memory_no_longer_measures_rss():
    from tfmedgan.engine import memory

    for name in ("current_rss_bytes", "peak_rss_bytes", "reset_peak_rss", "_status_kib"):
        assert not hasattr(memory, name)
    assert callable(memory.checkpointed_call) and callable(memory.saved_activation_bytes)
