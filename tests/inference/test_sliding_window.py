"""Tests for tfmedgan.inference.sliding_window."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tfmedgan.errors import TfmedganError
from tfmedgan.inference.sliding_window import coverage_weights, sliding_window_inference, window_starts


def identity(batch: np.ndarray) -> np.ndarray:
    return batch.copy()


def nearest_up(scale: int):
    def predict(batch: np.ndarray) -> np.ndarray:
        out = batch
        for axis in range(1, batch.ndim - 1):
            out = np.repeat(out, scale, axis=axis)
        return out

    return predict


def upsample(volume: np.ndarray, scale: int) -> np.ndarray:
    out = volume
    for axis in range(volume.ndim):
        out = np.repeat(out, scale, axis=axis)
    return out


def original_origins(length: int, patch: int, stride: int) -> list[int]:
    """seed-002 orilist3Dfull along one axis."""
    origins = np.arange(0, length - (patch - stride), stride)
    origins[-1] = length - patch
    return [int(o) for o in origins]


# ---------------------------------------------------------------- window_starts


def test_window_starts_examples():
    assert window_starts(256, 128, 104) == [0, 104, 128]
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(10, 4, 4) == [0, 4, 6]
    assert window_starts(8, 8, 3) == [0]
    assert window_starts(9, 8, 8) == [0, 1]


@pytest.mark.parametrize("patch", [25, 32, 40, 64, 128])
def test_window_starts_match_original_for_default_stride(patch):
    stride = patch - 24
    for length in range(patch, 3 * patch + 7):
        assert window_starts(length, patch, stride) == original_origins(length, patch, stride)


def test_windows_cover_axis():
    for size, patch, stride in itertools.product(range(1, 30), range(1, 12), range(1, 14)):
        if size < patch or stride > patch:
            continue
        starts = window_starts(size, patch, stride)
        covered = np.zeros(size, bool)
        for start in starts:
            assert 0 <= start <= size - patch
            covered[start : start + patch] = True
        assert covered.all()
        assert starts == sorted(set(starts))
        assert starts[-1] == size - patch


def test_window_starts_errors():
    with pytest.raises(TfmedganError):
        window_starts(5, 8, 1)
    with pytest.raises(TfmedganError):
        window_starts(10, 4, 0)
    with pytest.raises(TfmedganError, match="skip"):
        window_starts(10, 4, 5)


# ---------------------------------------------------------------- reproduction


CASES = [
    # (shape, patch, stride)
    ((37, 29), (16, 16), (5, 7)),
    ((5, 7), (8, 8), None),  # smaller than the patch on both axes
    ((5, 20), (8, 8), (3, 3)),  # smaller on one axis only
    ((19, 23, 17), (8, 8, 8), (5, 6, 3)),
    ((3, 9, 6), (4, 8, 8), (2, 4, 4)),  # mixed smaller/larger
    ((11, 10, 9), (8, 8, 8), None),  # default stride (clipped to 1)
]


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
@pytest.mark.parametrize("shape,patch,stride", CASES)
def test_identity_reproduces_input(shape, patch, stride, blend):
    rng = np.random.default_rng(0)
    volume = rng.normal(size=shape).astype(np.float32)
    out = sliding_window_inference(volume, identity, patch, stride=stride, blend=blend, batch_size=3)
    assert out.shape == volume.shape
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, volume, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
@pytest.mark.parametrize("shape,patch,stride", CASES[:5])
def test_scale2_nearest_upsampling(shape, patch, stride, blend):
    rng = np.random.default_rng(1)
    volume = rng.normal(size=shape).astype(np.float32)
    out = sliding_window_inference(volume, nearest_up(2), patch, scale=2, stride=stride, blend=blend, batch_size=2)
    assert out.shape == tuple(2 * s for s in shape)
    np.testing.assert_allclose(out, upsample(volume, 2), rtol=1e-5, atol=1e-5)


def test_default_stride_and_border_with_realistic_patch():
    # patch 32 -> stride 8, default border 10*scale = 20 (limit 24*2/2 = 24), 2D.
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(70, 45)).astype(np.float32)
    for blend in ("mean", "gaussian"):
        out = sliding_window_inference(volume, nearest_up(2), 32, scale=2, blend=blend, batch_size=8)
        np.testing.assert_allclose(out, upsample(volume, 2), rtol=1e-5, atol=1e-5)


def test_channel_axis_is_kept():
    volume = np.arange(9 * 10 * 11, dtype=np.float32).reshape(9, 10, 11, 1)
    out = sliding_window_inference(volume, identity, 8, stride=4)
    assert out.shape == volume.shape
    np.testing.assert_allclose(out, volume)
    image = np.arange(20 * 13, dtype=np.float32).reshape(20, 13, 1)
    out2 = sliding_window_inference(image, nearest_up(2), (8, 8), scale=2, stride=5)
    assert out2.shape == (40, 26, 1)
    np.testing.assert_allclose(out2[..., 0], upsample(image[..., 0], 2))


# ---------------------------------------------------------------- weights


def brute_force_weights(shape, patch, scale, stride, border, blend):
    """Independent per-window accumulation of the blending weights."""
    padded = [max(s, p) for s, p in zip(shape, patch)]
    total = np.zeros([p * scale for p in padded], np.float64)
    starts = [window_starts(s, p, st) for s, p, st in zip(padded, patch, stride)]
    for origin in itertools.product(*starts):
        weight = np.ones([p * scale for p in patch])
        for axis, start in enumerate(origin):
            n = patch[axis] * scale
            profile = np.ones(n)
            if blend == "gaussian":
                x = np.arange(n) - (n - 1) / 2
                profile = np.exp(-0.5 * (x / (n / 8)) ** 2)
            if start > 0:
                profile[:border] = 0
            if start + patch[axis] < padded[axis]:
                profile[n - border :] = 0
            shape_1d = [1] * len(patch)
            shape_1d[axis] = n
            weight = weight * profile.reshape(shape_1d)
        slices = tuple(slice(o * scale, o * scale + p * scale) for o, p in zip(origin, patch))
        total[slices] += weight
    return total[tuple(slice(0, s * scale) for s in shape)]


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
@pytest.mark.parametrize(
    "shape,patch,scale,stride,border",
    [
        ((30, 31), (12, 12), 1, (6, 4), 3),
        ((30, 31), (12, 12), 2, (6, 4), 6),
        ((13, 17, 9), (8, 8, 8), 2, (4, 4, 3), 4),
        ((5, 17, 9), (8, 8, 8), 1, (2, 3, 3), 2),
    ],
)
def test_every_voxel_has_positive_weight(shape, patch, scale, stride, border, blend):
    weights = coverage_weights(shape, patch, scale=scale, stride=stride, border=border, blend=blend)
    assert weights.shape == tuple(s * scale for s in shape)
    assert (weights > 0).all()
    expected = brute_force_weights(shape, patch, scale, stride, border, blend)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-7)


def test_default_border_is_clipped_to_keep_coverage():
    # patch 16 -> default stride 1 and overlap 15 -> border clipped from 10 to 7.
    weights = coverage_weights((40, 40), 16)
    assert (weights > 0).all()
    weights = coverage_weights((40, 40), 16, stride=12)  # overlap 4 -> border 2
    assert (weights > 0).all()


def test_border_masks_interior_faces_only():
    # 1D: length 20, patch 10, stride 5, border 2 -> windows [0,10), [5,15), [10,20).
    weights = coverage_weights((20,), 10, stride=5, border=2)
    expected = np.zeros(20)
    expected[0:8] += 1  # first window: left face on the volume edge stays unmasked
    expected[7:13] += 1
    expected[12:20] += 1  # last window: right face on the edge stays unmasked
    np.testing.assert_array_equal(weights, expected)


# ---------------------------------------------------------------- averaging


def make_counter_predict(scale: int = 1):
    """predict returning, for every patch, a constant equal to its global call position."""
    state = {"next": 0, "batches": []}

    def predict(batch: np.ndarray) -> np.ndarray:
        count = batch.shape[0]
        ids = np.arange(state["next"], state["next"] + count, dtype=np.float32)
        state["next"] += count
        state["batches"].append(count)
        out_shape = (count, *[s * scale for s in batch.shape[1:-1]], 1)
        return np.ones(out_shape, np.float32) * ids.reshape((count,) + (1,) * (len(out_shape) - 1))

    return predict, state


def test_constant_per_position_hand_computed_1d():
    predict, state = make_counter_predict()
    out = sliding_window_inference(np.zeros(10, np.float32), predict, 4, stride=3, batch_size=2)
    # windows [0,4) -> 0, [3,7) -> 1, [6,10) -> 2; default border is clipped to 0 (overlap 1)
    np.testing.assert_allclose(out, [0, 0, 0, 0.5, 1, 1, 1.5, 2, 2, 2])
    assert state["batches"] == [2, 1]


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
def test_constant_per_position_matches_brute_force(blend):
    shape, patch, scale, stride, border = (14, 11, 9), (6, 6, 6), 2, (4, 3, 2), 2
    predict, state = make_counter_predict(scale)
    out = sliding_window_inference(
        np.zeros(shape, np.float32), predict, patch, scale=scale, stride=stride, border=border, blend=blend,
        batch_size=5,
    )
    padded = [max(s, p) for s, p in zip(shape, patch)]
    starts = [window_starts(s, p, st) for s, p, st in zip(padded, patch, stride)]
    origins = list(itertools.product(*starts))
    assert state["next"] == len(origins)
    assert state["batches"] == [5] * (len(origins) // 5) + ([len(origins) % 5] if len(origins) % 5 else [])
    numerator = np.zeros([s * scale for s in shape])
    denominator = np.zeros_like(numerator)
    for index, origin in enumerate(origins):
        single = brute_force_weights(patch, patch, scale, patch, 0, blend)  # blend profile only
        for axis, start in enumerate(origin):
            n = patch[axis] * scale
            mask = np.ones(n)
            if start > 0:
                mask[:border] = 0
            if start + patch[axis] < padded[axis]:
                mask[n - border :] = 0
            shape_1d = [1] * 3
            shape_1d[axis] = n
            single = single * mask.reshape(shape_1d)
        slices = tuple(slice(o * scale, (o + p) * scale) for o, p in zip(origin, patch))
        numerator[slices] += index * single
        denominator[slices] += single
    np.testing.assert_allclose(out, numerator / denominator, rtol=1e-4, atol=1e-4)


def test_batch_size_does_not_change_result():
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(21, 18, 15)).astype(np.float32)

    def predict(batch):
        return np.tanh(batch) + batch.mean(axis=(1, 2, 3), keepdims=True)

    outputs = [
        sliding_window_inference(volume, predict, 8, stride=5, border=1, blend="gaussian", batch_size=b)
        for b in (1, 4, 100)
    ]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outputs[0], outputs[2], rtol=1e-6, atol=1e-6)


def test_matches_original_stitching_away_from_the_shell():
    """Inside the 10*SR shell the default 'mean' mode equals the seed-002 stitching."""
    rng = np.random.default_rng(4)
    shape, patch, scale = (70, 57), (32, 32), 2
    volume = rng.normal(size=shape).astype(np.float32)
    offsets = {}

    def predict(batch):
        out = nearest_up(scale)(batch)
        keys = [float(b.sum()) for b in batch]
        for key in keys:
            offsets.setdefault(key, rng.normal())
        return out + np.array([offsets[k] for k in keys], np.float32).reshape(-1, 1, 1, 1)

    ours = sliding_window_inference(volume, predict, patch, scale=scale)
    # original: stride patch-24, every face masked by 10*SR, uniform average, zero count -> 1
    border = 10 * scale
    total = np.zeros([s * scale for s in shape])
    count = np.zeros_like(total)
    starts = [original_origins(s, p, p - 24) for s, p in zip(shape, patch)]
    mask = np.zeros([p * scale for p in patch])
    mask[border:-border, border:-border] = 1
    for origin in itertools.product(*starts):
        window = volume[origin[0] : origin[0] + patch[0], origin[1] : origin[1] + patch[1]]
        out = predict(window[None, ..., None])[0, ..., 0]
        slices = tuple(slice(o * scale, (o + p) * scale) for o, p in zip(origin, patch))
        total[slices] += out * mask
        count[slices] += mask
    count[count == 0] = 1
    original = total / count
    inner = (slice(border, -border), slice(border, -border))
    np.testing.assert_allclose(ours[inner], original[inner], rtol=1e-5, atol=1e-5)
    assert np.all(original[:border] == 0)  # the original's zero shell
    assert np.all(ours[:border] != 0)


# ---------------------------------------------------------------- errors and progress


def test_errors():
    volume = np.zeros((20, 20), np.float32)
    with pytest.raises(TfmedganError, match="blend"):
        sliding_window_inference(volume, identity, 8, blend="max")
    with pytest.raises(TfmedganError, match="predict returned shape"):
        sliding_window_inference(volume, identity, 8, scale=2, stride=4)
    with pytest.raises(TfmedganError, match="border"):
        sliding_window_inference(volume, identity, 8, stride=6, border=3)
    with pytest.raises(TfmedganError, match="does not match"):
        sliding_window_inference(np.zeros((4, 20, 20, 2)), identity, (8, 8, 8))
    with pytest.raises(TfmedganError, match="stride"):
        sliding_window_inference(volume, identity, 8, stride=0)
    with pytest.raises(TfmedganError, match="stride"):
        sliding_window_inference(volume, identity, 8, stride=9)
    with pytest.raises(TfmedganError, match="batch_size"):
        sliding_window_inference(volume, identity, 8, batch_size=0)


def test_progress_bar_runs(capsys):
    volume = np.ones((12, 12), np.float32)
    out = sliding_window_inference(volume, identity, 8, stride=4, progress=True)
    np.testing.assert_allclose(out, volume)
    assert "sliding window" in capsys.readouterr().err
