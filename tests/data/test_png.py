import numpy as np
import pytest
from PIL import Image

from tfmedgan.data import png
from tfmedgan.errors import TfmedganError


def test_sixteen_bit_pngs_keep_their_depth(tmp_path):
    ramp = (np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)  # 0 .. 4092: 12-bit values
    Image.fromarray(ramp).save(tmp_path / "a.png")
    files = png.list_images([tmp_path])
    assert png.check_images(files) == (32, 32, 16)
    image = png.load_images(files, 32, 1, bits=16)[0, ..., 0]
    np.testing.assert_allclose(image, ramp / 32767.5 - 1.0, atol=1e-6)
    assert len(np.unique(image)) == 32 * 32  # not squeezed to 8 bits


def test_eight_bit_round_trip_and_resize(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    files = png.list_images([tmp_path])
    np.testing.assert_allclose(png.load_images(files, 16, 1)[0, ..., 0], pixels / 127.5 - 1.0, atol=1e-6)
    assert png.load_images(files, 8, 1).shape == (1, 8, 8, 1)


def test_a_tiff_named_png_is_refused_before_training(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "fake.png", format="TIFF")
    with pytest.raises(TfmedganError, match="TIFF file, not PNG"):
        png.check_images(png.list_images([tmp_path]))


def test_mixed_bit_depths_are_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(TfmedganError, match="mixed bit depths"):
        png.check_images(png.list_images([tmp_path]))


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert list(png.epoch_order(10, 3, 1)) == list(png.epoch_order(10, 3, 1))
    assert list(png.epoch_order(10, 3, 1)) != list(png.epoch_order(10, 3, 2))


def test_skip_batches_skips_whole_batches_before_decoding(tmp_path):
    for index in range(10):
        Image.fromarray(np.full((8, 8), index * 20, np.uint8)).save(tmp_path / f"{index}.png")
    files = png.list_images([tmp_path])
    full = [b.numpy() for b in png.image_dataset(files, 8, 1, 4, seed=0, epoch=0)]
    skipped = [b.numpy() for b in png.image_dataset(files, 8, 1, 4, seed=0, epoch=0, skip_batches=1)]
    assert len(skipped) == 2
    for a, b in zip(full[1:], skipped):
        np.testing.assert_array_equal(a, b)
