"""Tests for tfmedgan.metrics: agreement with scikit-image, best_match semantics, masks, MI."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tfmedgan import metrics
from tfmedgan.errors import TfmedganError


def smooth_images(
    rng: np.random.Generator, count: int, shape: tuple[int, ...], sigma: float = 2.0
) -> np.ndarray:
    """Random smooth images scaled to [-1, 1] (structured, unlike white noise)."""
    noise = rng.standard_normal((count,) + shape)
    images = ndimage.gaussian_filter(noise, (0,) + (sigma,) * len(shape))
    return images / np.abs(images).max(axis=tuple(range(1, images.ndim)), keepdims=True)


def brain_like(rng: np.random.Generator, count: int, size: int = 32) -> np.ndarray:
    """Background exactly -1 with a textured disc, like skull-stripped slices scaled to [-1, 1]."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2
    images = np.full((count, size, size), -1.0)
    texture = smooth_images(rng, count, (size, size), sigma=1.5)
    images[:, disc] = 0.6 * texture[:, disc] + 0.2
    return images


def skimage_scores(reference: np.ndarray, stack: np.ndarray, data_range: float) -> np.ndarray:
    """The seed's loop: structural_similarity(real, fake, data_range=...) for every real image.

    skimage computes float32 inputs in float32, so this is the seed's exact arithmetic only up to
    float32 rounding; compare float64 results with ``skimage_scores_float64``.
    """
    return np.array([structural_similarity(real, reference, data_range=data_range) for real in stack])


def skimage_scores_float64(reference: np.ndarray, stack: np.ndarray, data_range: float) -> np.ndarray:
    return skimage_scores(reference.astype(np.float64), stack.astype(np.float64), data_range)


# ------------------------------------------------------------------------------------------------
# ssim / ssim_map against skimage


@pytest.mark.parametrize("data_range", [2.0, 0.5, 255.0])
def test_ssim_2d_matches_skimage(data_range):
    rng = np.random.default_rng(0)
    structured = smooth_images(rng, 2, (40, 37))
    noise = rng.uniform(-1, 1, size=(2, 40, 37))
    pairs = [
        (structured[0], structured[1]),
        (structured[0], structured[0] + 0.1 * noise[0]),
        (noise[0], noise[1]),
        (structured[1] * 100 + 50, structured[0] * 100 + 50),
    ]
    for x, y in pairs:
        expected = structural_similarity(x, y, data_range=data_range)
        assert metrics.ssim(x, y, data_range=data_range) == pytest.approx(expected, abs=1e-10)


def test_ssim_float32_and_integer_inputs():
    rng = np.random.default_rng(1)
    x, y = smooth_images(rng, 2, (33, 33)).astype(np.float32)
    # skimage computes float32 inputs in float32; we compute in float64
    assert metrics.ssim(x, y, 2.0) == pytest.approx(structural_similarity(x, y, data_range=2.0), abs=1e-6)
    assert metrics.ssim(x, y, 2.0) == pytest.approx(
        structural_similarity(x.astype(np.float64), y.astype(np.float64), data_range=2.0), abs=1e-12
    )
    a, b = rng.integers(0, 256, size=(2, 20, 24), dtype=np.uint8)
    assert metrics.ssim(a, b, 255) == pytest.approx(structural_similarity(a, b, data_range=255), abs=1e-10)


@pytest.mark.parametrize("shape", [(16, 16, 16), (20, 9, 17)])
def test_ssim_3d_matches_skimage(shape):
    rng = np.random.default_rng(2)
    x = smooth_images(rng, 1, shape, sigma=1.5)[0]
    y = x + 0.2 * rng.standard_normal(shape)
    for data_range in (2.0, 3.7):
        expected = structural_similarity(x, y, data_range=data_range)
        assert metrics.ssim(x, y, data_range) == pytest.approx(expected, abs=1e-10)


def test_ssim_identical_images_is_one_and_symmetric():
    rng = np.random.default_rng(3)
    x, y = smooth_images(rng, 2, (32, 32))
    assert metrics.ssim(x, x, 2.0) == 1.0
    assert metrics.ssim(x, y, 2.0) == pytest.approx(metrics.ssim(y, x, 2.0), abs=1e-15)


def test_ssim_spatial_dims_2_on_a_volume_is_mean_of_slices():
    rng = np.random.default_rng(4)
    x = smooth_images(rng, 1, (8, 24, 24))[0]
    y = x + 0.3 * rng.standard_normal(x.shape)
    slice_scores = [structural_similarity(x[k], y[k], data_range=2.0) for k in range(8)]
    assert metrics.ssim(x, y, 2.0, spatial_dims=2) == pytest.approx(np.mean(slice_scores), abs=1e-12)
    volume_ssim = metrics.ssim(x, y, 2.0)  # 7x7x7 window: a different number
    assert metrics.ssim(x, y, 2.0, spatial_dims=2) != pytest.approx(volume_ssim, abs=1e-3)


def test_ssim_map_matches_skimage_full_map_cropped():
    rng = np.random.default_rng(5)
    x, y = smooth_images(rng, 2, (30, 28))
    _, full = structural_similarity(x, y, data_range=2.0, full=True)
    ours = metrics.ssim_map(x, y, 2.0)
    assert ours.shape == (24, 22)
    np.testing.assert_allclose(ours, full[3:-3, 3:-3], atol=1e-12)


def test_ssim_mask():
    rng = np.random.default_rng(6)
    x = smooth_images(rng, 1, (20, 20, 20))[0]
    y = x + 0.3 * rng.standard_normal(x.shape)
    everything = np.ones(x.shape, bool)
    assert metrics.ssim(x, y, 2.0, mask=everything) == pytest.approx(metrics.ssim(x, y, 2.0), abs=1e-15)

    mask = np.zeros(x.shape, bool)
    mask[5:12, 4:15, 3:9] = True
    values = metrics.ssim_map(x, y, 2.0)
    expected = values[mask[3:-3, 3:-3, 3:-3]].mean()
    assert metrics.ssim(x, y, 2.0, mask=mask) == pytest.approx(expected, abs=1e-15)
    # noise only inside the mask lowers the masked score, not the score outside it
    noisy = x.copy()
    noisy[mask] += rng.standard_normal(mask.sum())
    inside = metrics.ssim(x, noisy, 2.0, mask=mask)
    outside = metrics.ssim(x, noisy, 2.0, mask=~mask)
    assert inside < metrics.ssim(x, noisy, 2.0) < outside

    border_only = np.zeros(x.shape, bool)
    border_only[:3] = True
    with pytest.raises(TfmedganError, match="mask selects no pixel"):
        metrics.ssim(x, y, 2.0, mask=border_only)
    with pytest.raises(TfmedganError, match="boolean"):
        metrics.ssim(x, y, 2.0, mask=mask.astype(np.uint8))


def test_ssim_errors():
    image = np.zeros((16, 16))
    with pytest.raises(TfmedganError, match="data_range"):
        metrics.ssim(image, image, 0.0)
    with pytest.raises(TfmedganError, match="data_range"):
        metrics.ssim(image, image, float("nan"))
    with pytest.raises(TfmedganError, match="same shape"):
        metrics.ssim(image, np.zeros((16, 15)), 1.0)
    with pytest.raises(TfmedganError, match="at least 7"):
        metrics.ssim(np.zeros((6, 16)), np.zeros((6, 16)), 1.0)
    with pytest.raises(TfmedganError, match="2D or 3D"):
        metrics.ssim(np.zeros((2, 8, 8, 8)), np.zeros((2, 8, 8, 8)), 1.0)
    with pytest.raises(TfmedganError, match="spatial_dims"):
        metrics.ssim(image, image, 1.0, spatial_dims=4)


# ------------------------------------------------------------------------------------------------
# ssim_many / best_match


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


# ------------------------------------------------------------------------------------------------
# PSNR, MAE, mutual information


def test_psnr_matches_skimage():
    rng = np.random.default_rng(16)
    x = rng.uniform(-1, 1, size=(16, 20, 12))
    y = x + 0.05 * rng.standard_normal(x.shape)
    for data_range in (2.0, 1.0, 255.0):
        expected = peak_signal_noise_ratio(x, y, data_range=data_range)
        assert metrics.psnr(x, y, data_range) == pytest.approx(expected, abs=1e-10)
    assert metrics.psnr(x, x, 2.0) == float("inf")
    mask = np.zeros(x.shape, bool)
    mask[2:10] = True
    assert metrics.psnr(x, y, 2.0, mask=mask) == pytest.approx(
        peak_signal_noise_ratio(x[mask], y[mask], data_range=2.0), abs=1e-10
    )
    with pytest.raises(TfmedganError, match="data_range"):
        metrics.psnr(x, y, -1.0)


def test_mae_with_and_without_mask():
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    y = np.array([[1.0, 1.0], [0.0, 7.0]])
    assert metrics.mae(x, y) == pytest.approx((1 + 0 + 2 + 4) / 4)
    mask = np.array([[True, False], [False, True]])
    assert metrics.mae(x, y, mask=mask) == pytest.approx((1 + 4) / 2)
    assert metrics.mae(x.astype(np.uint8), y.astype(np.uint8)) == pytest.approx(7 / 4)  # no uint8 wrap-around
    with pytest.raises(TfmedganError, match="mask selects no pixel"):
        metrics.mae(x, y, mask=np.zeros((2, 2), bool))
    with pytest.raises(TfmedganError, match="does not match"):
        metrics.mae(x, y, mask=np.ones((3, 2), bool))


def test_mutual_information_properties():
    rng = np.random.default_rng(17)
    x = smooth_images(rng, 1, (24, 24, 24), sigma=1.0)[0]
    independent = rng.standard_normal(x.shape)
    bins = 32

    counts, _ = np.histogram(x, bins=bins)
    probabilities = counts[counts > 0] / counts.sum()
    entropy = -np.sum(probabilities * np.log(probabilities))
    assert metrics.mutual_information(x, x, bins=bins) == pytest.approx(entropy, abs=1e-12)

    dependent = metrics.mutual_information(x, -3 * x + 1, bins=bins)  # invertible map: same partition
    assert dependent == pytest.approx(entropy, abs=1e-12)
    unrelated = metrics.mutual_information(x, independent, bins=bins)
    assert 0 <= unrelated < 0.2 * entropy
    noisy = metrics.mutual_information(x, x + 0.3 * independent, bins=bins)
    assert unrelated < noisy < entropy
    assert metrics.mutual_information(independent, x, bins=bins) == pytest.approx(unrelated, abs=1e-12)

    # masks: only the masked voxels are counted
    mask = x > 0
    sub = x[mask]
    counts, _ = np.histogram(sub, bins=bins)
    probabilities = counts[counts > 0] / counts.sum()
    assert metrics.mutual_information(x, x, bins=bins, mask=mask) == pytest.approx(
        -np.sum(probabilities * np.log(probabilities)), abs=1e-12
    )
    # explicit ranges: a constant image has zero information
    assert metrics.mutual_information(np.ones((8, 8)), np.ones((8, 8))) == 0.0
    with_range = metrics.mutual_information(x, x, bins=bins, value_ranges=((-1, 1), (-1, 1)))
    counts, _ = np.histogram(x, bins=bins, range=(-1, 1))
    probabilities = counts[counts > 0] / counts.sum()
    assert with_range == pytest.approx(-np.sum(probabilities * np.log(probabilities)), abs=1e-12)
    with pytest.raises(TfmedganError, match="bins"):
        metrics.mutual_information(x, x, bins=1)


def test_module_docstring_examples():
    results = doctest.testmod(metrics, optionflags=doctest.ELLIPSIS)
    assert results.failed == 0 and results.attempted >= 5
