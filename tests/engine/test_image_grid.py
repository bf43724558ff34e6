"""image_grid: per-image scaling (as imshow(cmap='gray') showed previews) and the fixed [-1, 1] option."""

import numpy as np
import pytest

from tfmedgan.engine.rundir import image_grid


def test_per_image_scaling_stretches_each_image_to_full_range():
    dim = np.linspace(0.6, 0.9, 16, dtype=np.float32).reshape(1, 4, 4, 1)  # a saturated, low-contrast fake
    dark = np.linspace(-1.0, -0.8, 16, dtype=np.float32).reshape(1, 4, 4, 1)
    grid = image_grid(np.concatenate([dim, dark]), columns=2)
    assert grid.shape == (4, 8, 1) and grid.dtype == np.uint8
    for tile in (grid[:, :4, 0], grid[:, 4:, 0]):
        assert tile.min() == 0 and tile.max() == 255
    # Order inside each tile is kept.
    assert grid[0, 0, 0] == 0 and grid[3, 3, 0] == 255


def test_per_image_matches_matplotlib_gray_normalisation():
    rng = np.random.default_rng(0)
    image = rng.uniform(-0.3, 0.5, (1, 6, 6, 1)).astype(np.float32)
    import matplotlib.colors

    expected = matplotlib.colors.Normalize()(image[0, ..., 0])  # imshow's default autoscaling
    grid = image_grid(image)
    np.testing.assert_allclose(grid[..., 0] / 255.0, expected, atol=0.5 / 255 + 1e-6)


def test_constant_image_is_black_not_nan():
    grid = image_grid(np.full((2, 4, 4, 1), 0.3, np.float32))
    assert (grid == 0).all()


def test_fixed_scaling_maps_minus_one_one_and_clips():
    images = np.array([-1.0, 0.0, 1.0, 3.0], np.float32).reshape(1, 2, 2, 1)
    grid = image_grid(images, scaling="fixed")
    assert grid[..., 0].tolist() == [[0, 128], [255, 255]]


def test_partial_last_row_stays_black_and_bad_scaling_raises():
    grid = image_grid(np.ones((3, 2, 2, 1), np.float32) * np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1))
    assert grid.shape == (4, 4, 1)
    assert (grid[2:, 2:] == 0).all()
    with pytest.raises(ValueError):
        image_grid(np.zeros((1, 2, 2, 1)), scaling="auto")
