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


# -- output inside the data (issue 10, section 2) ------------------------------------------------
def _png(path, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size, size), np.uint8)).save(path)


def test_list_images_skips_run_directories_inside_the_data(tmp_path):
    data = tmp_path / "data"
    _png(data / "a.png")
    _png(data / "sub" / "b.png")
    run = data / "dcgan-20250101-000000"  # a run written into the data folder by an earlier training
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    _png(run / "samples" / "epoch-0001.png", size=16)
    _png(run / "loss_curve.png", size=16)
    not_a_run = data / "notes"  # a config.json alone does not make a run directory
    (not_a_run).mkdir()
    (not_a_run / "config.json").write_text("{}")
    _png(not_a_run / "c.png")
    files = png.list_images([data])
    assert [p.relative_to(data).as_posix() for p in files] == ["a.png", "notes/c.png", "sub/b.png"]
    assert png.check_images(files) == (8, 8, 8)  # no "mixed image sizes" from the run's figures


def test_output_inside_or_equal_to_a_data_folder_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    for output in (data, data / "runs", data / "runs" / "deeper"):
        with pytest.raises(TfmedganError, match="inside the data folder") as caught:
            png.check_output_outside([other, data], output)
        assert "\n" not in str(caught.value)
    # a relative spelling of the same place is caught too
    with pytest.raises(TfmedganError, match="inside the data folder"):
        png.check_output_outside([data], tmp_path / "other" / ".." / "data" / "runs")
    png.check_output_outside([data, other], tmp_path / "runs")  # beside the data: fine
    png.check_output_outside([data / "runs" / "x"], data)  # data below the output: fine (runs go into new subfolders)
