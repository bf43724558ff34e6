"""Tests for tfmedgan.metrics.search (ssim_many, best_match): agreement with a scikit-image loop,
precision, threads and chunking, best_match semantics."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from tfmedgan import metrics
from tfmedgan.errors import TfmedganError
from tfmedgan.metrics import search
from tests.metrics.images import brain_like, skimage_scores, skimage_scores_float64, smooth_images


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ssim_many_matches_skimage_loop_2d(dtype):
    rng = np.random.default_rng(7)
    stack = np.concatenate([smooth_images(rng, 12, (40, 36)), brain_like(rng, 12, 40)[:, :, :36]])
    stack = stack.astype(dtype)
    fake = (stack[5] + 0.2 * rng.standard_normal(stack[5].shape)).astype(dtype)
    for data_range in (float(fake.max() - fake.min()), 0.7, 5.0):
        expected = skimage_scores(fake, stack, data_range)  # skimage's own arithmetic (float32 for float32)
        expected64 = skimage_scores_float64(fake, stack, data_range)
        for precision in ("auto", "float32", "float64"):
            scores = metrics.ssim_many(fake, stack, data_range, precision=precision)
            assert scores.shape == (24,) and scores.dtype == np.float64
            np.testing.assert_allclose(scores, expected, atol=1e-6)
            np.testing.assert_allclose(scores, expected64, atol=1e-6 if precision != "float64" else 1e-10)


def test_ssim_many_matches_skimage_loop_3d():
    rng = np.random.default_rng(8)
    stack = smooth_images(rng, 6, (16, 18, 17), sigma=1.5).astype(np.float32)
    reference = stack[2] + np.float32(0.3) * rng.standard_normal(stack[2].shape).astype(np.float32)
    expected = skimage_scores(reference, stack, 2.5)
    np.testing.assert_allclose(metrics.ssim_many(reference, stack, 2.5), expected, atol=1e-6)
    np.testing.assert_allclose(
        metrics.ssim_many(reference, stack, 2.5, precision="float64"),
        skimage_scores_float64(reference, stack, 2.5),
        atol=1e-10,
    )


def test_ssim_many_offset_and_integer_images():
    rng = np.random.default_rng(9)
    images = smooth_images(rng, 8, (24, 24))
    shifted = images * 50 + 1000  # large offset: the common shift keeps float32 exact enough
    np.testing.assert_allclose(
        metrics.ssim_many(shifted[0], shifted, 100.0),
        skimage_scores(shifted[0], shifted, 100.0),
        atol=1e-6,
    )
    as_uint8 = np.round(images * 127 + 128).astype(np.uint8)
    np.testing.assert_allclose(
        metrics.ssim_many(as_uint8[1], as_uint8, 255),
        skimage_scores(as_uint8[1].astype(np.float64), as_uint8.astype(np.float64), 255),
        atol=1e-6,
    )


def test_ssim_many_auto_precision_switches_to_float64_for_large_values():
    """Nearly flat bright regions with a tiny data_range: float32 sums of squares are not enough."""
    rng = np.random.default_rng(10)
    stack = -np.ones((4, 48, 48))
    stack[:, 8:40, 8:40] = 0.7 + 1e-3 * rng.standard_normal((4, 32, 32))
    fake = 0.3 + 0.004 * rng.standard_normal((48, 48))
    fake[0, 0] = -0.01  # straddles 0, so no shift is applied
    data_range = float(fake.max() - fake.min())
    expected = skimage_scores(fake, stack, data_range)
    np.testing.assert_allclose(metrics.ssim_many(fake, stack, data_range), expected, atol=1e-9)
    forced = metrics.ssim_many(fake, stack, data_range, precision="float32")
    assert np.abs(forced - expected).max() < 1e-4  # still within the promised tolerance here


def test_ssim_many_batching_and_threads_do_not_change_results():
    rng = np.random.default_rng(11)
    stack = smooth_images(rng, 23, (32, 32)).astype(np.float32)
    reference = stack[0] * 0.5 + stack[1] * 0.5
    baseline = metrics.ssim_many(reference, stack, 2.0, workers=1, batch_size=23)
    for workers, batch_size in [(1, 1), (2, 1), (2, 4), (3, 7), (None, None)]:
        scores = metrics.ssim_many(reference, stack, 2.0, workers=workers, batch_size=batch_size)
        np.testing.assert_allclose(scores, baseline, atol=1e-9)


def test_scores_do_not_depend_on_position_threads_or_chunking():
    """Duplicates must get bit-identical scores wherever they sit (ties go to the first index)."""
    rng = np.random.default_rng(18)
    base = smooth_images(rng, 1, (64, 64))[0].astype(np.float32)
    stack = np.repeat(base[None], 30, axis=0)
    reference = (base + np.float32(0.3) * rng.standard_normal((64, 64))).astype(np.float32)
    for workers, batch_size in [(1, 1), (1, 7), (2, 4), (2, 30)]:
        scores = metrics.ssim_many(reference, stack, 2.0, workers=workers, batch_size=batch_size)
        assert np.unique(scores).size == 1
    chunked = metrics.ssim_many(reference, (stack[start : start + 9] for start in range(0, 30, 9)), 2.0)
    assert np.array_equal(chunked, scores)


def test_best_match_equals_python_loop_over_skimage():
    rng = np.random.default_rng(12)
    stack = np.concatenate([brain_like(rng, 25, 32), smooth_images(rng, 25, (32, 32))]).astype(np.float32)
    rng.shuffle(stack)
    fake = (stack[17] + np.float32(0.4) * rng.standard_normal((32, 32))).astype(np.float32)
    data_range = float(fake.max() - fake.min())
    loop = [structural_similarity(real, fake, data_range=data_range) for real in stack]
    best = max(loop)

    best_ssim, best_index, scores = metrics.best_match(fake, stack)
    assert best_index == loop.index(best) == 17
    assert best_ssim == pytest.approx(best, abs=1e-6)
    np.testing.assert_allclose(scores, loop, atol=1e-6)
    assert isinstance(best_ssim, float) and isinstance(best_index, int)

    # an explicit data_range is used as given
    _, _, scores_r1 = metrics.best_match(fake, stack, data_range=1.0)
    np.testing.assert_allclose(scores_r1, skimage_scores(fake, stack, 1.0), atol=1e-6)


def test_best_match_ties_resolve_to_first_index():
    rng = np.random.default_rng(13)
    stack = smooth_images(rng, 10, (32, 32))
    fake = stack[6].copy()
    stack[2] = stack[6]  # an exact duplicate earlier in the stack
    best_ssim, best_index, scores = metrics.best_match(fake, stack)
    assert scores[2] == scores[6]
    assert best_index == 2
    assert best_ssim == pytest.approx(1.0, abs=1e-6)


def test_best_match_accepts_an_iterable_of_chunks():
    rng = np.random.default_rng(14)
    stack = brain_like(rng, 50, 32)
    fake = stack[33] + 0.3 * rng.standard_normal((32, 32))
    expected = metrics.best_match(fake, stack)

    def chunks():
        for start, stop in [(0, 7), (7, 8), (8, 30), (30, 50)]:
            yield stack[start:stop]

    for source in (chunks(), list(stack), iter(stack)):  # chunks, then single images
        best_ssim, best_index, scores = metrics.best_match(fake, source, workers=2, batch_size=3)
        assert best_index == expected[1] == 33
        assert best_ssim == expected[0]
        np.testing.assert_allclose(scores, expected[2], atol=1e-12)

    # the generator is consumed lazily: one chunk after another
    consumed = []

    def tracking():
        for start in range(0, 50, 10):
            consumed.append(start)
            yield stack[start : start + 10]

    metrics.best_match(fake, tracking())
    assert consumed == [0, 10, 20, 30, 40]


def test_best_match_errors():
    rng = np.random.default_rng(15)
    stack = smooth_images(rng, 3, (16, 16))
    with pytest.raises(TfmedganError, match="constant"):
        metrics.best_match(np.zeros((16, 16)), stack)
    with pytest.raises(TfmedganError, match="empty"):
        metrics.best_match(stack[0], np.zeros((0, 16, 16)))
    with pytest.raises(TfmedganError, match="expected"):
        metrics.best_match(stack[0], np.zeros((3, 16, 17)))
    with pytest.raises(TfmedganError, match="at least 7"):
        metrics.best_match(np.eye(5), np.zeros((3, 5, 5)))
    with pytest.raises(TfmedganError, match="precision"):
        metrics.best_match(stack[0], stack, precision="float16")
    with pytest.raises(TfmedganError, match="NaN"):
        metrics.best_match(np.full((16, 16), np.nan), stack, data_range=1.0)
    # a NaN image is skipped, not chosen
    with_nan = stack.copy()
    with_nan[0, 5, 5] = np.nan
    _, best_index, scores = metrics.best_match(stack[0], with_nan)
    assert np.isnan(scores[0]) and best_index in (1, 2)



def test_module_docstring_examples():
    """The examples of tfmedgan.metrics.search and of the package docstring (which uses the re-exports)."""
    results = doctest.testmod(search, optionflags=doctest.ELLIPSIS)
    assert results.failed == 0 and results.attempted >= 10
    package = doctest.testmod(metrics, optionflags=doctest.ELLIPSIS)
    assert package.failed == 0 and package.attempted >= 7
