"""Tests for tfmedgan.data.samples.slices (OASIS-like PNG slices and their cached folder)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tfmedgan.data.samples import slices
from tfmedgan.errors import TfmedganError

PNG_RESOLUTION = 64


def _read_png(path: pathlib.Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.array(picture)


def _read_bytes(folder: pathlib.Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.png"))}


# ----------------------------------------------------------------------------------------------
# PNG slices
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("png") / "slices"
    returned = slices.make_png_slices(folder, n_images=6, resolution=PNG_RESOLUTION, seed=0)
    assert returned == folder
    return folder


def test_png_slices_files_shape_dtype_range(png_folder: pathlib.Path) -> None:
    names = sorted(path.name for path in png_folder.iterdir())
    assert names == [f"slice_{index:05d}.png" for index in range(6)]
    for name in names:
        with Image.open(png_folder / name) as picture:
            assert picture.mode == "L"
            assert picture.size == (PNG_RESOLUTION, PNG_RESOLUTION)
        pixels = _read_png(png_folder / name)
        assert pixels.dtype == np.uint8
        assert pixels.min() == 0 and pixels.max() > 150
        # black background: the border and the corners hold no brain
        assert pixels[0, :].max() == 0 and pixels[-1, :].max() == 0
        assert pixels[:, 0].max() == 0 and pixels[:, -1].max() == 0
        # brain roughly centred and of a sensible size
        brain = pixels > 0
        assert 0.1 < brain.mean() < 0.8
        centre_row, centre_column = ndimage.center_of_mass(brain)
        assert abs(centre_row - PNG_RESOLUTION / 2) < 0.15 * PNG_RESOLUTION
        assert abs(centre_column - PNG_RESOLUTION / 2) < 0.15 * PNG_RESOLUTION


def test_png_slices_differ_from_each_other(png_folder: pathlib.Path) -> None:
    images = [_read_png(path).astype(np.int16) for path in sorted(png_folder.glob("*.png"))]
    for first in range(len(images)):
        for second in range(first + 1, len(images)):
            assert np.abs(images[first] - images[second]).mean() > 1.0


def test_png_slices_deterministic_per_seed(
    png_folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    again = slices.make_png_slices(tmp_path / "same", n_images=6, resolution=PNG_RESOLUTION, seed=0)
    assert _read_bytes(again) == _read_bytes(png_folder)
    # image i depends only on (seed, i): fewer images give the same first files
    fewer = slices.make_png_slices(
        tmp_path / "fewer", n_images=2, resolution=PNG_RESOLUTION, seed=0
    )
    original_bytes = _read_bytes(png_folder)
    first_two = ("slice_00000.png", "slice_00001.png")
    assert _read_bytes(fewer) == {name: original_bytes[name] for name in first_two}
    other = slices.make_png_slices(
        tmp_path / "other", n_images=6, resolution=PNG_RESOLUTION, seed=1
    )
    other_bytes = _read_bytes(other)
    assert all(other_bytes[name] != original_bytes[name] for name in original_bytes)


def test_png_slices_rgb(tmp_path: pathlib.Path) -> None:
    folder = slices.make_png_slices(tmp_path, n_images=1, resolution=32, seed=3, channels=3)
    with Image.open(folder / "slice_00000.png") as picture:
        assert picture.mode == "RGB" and picture.size == (32, 32)
        pixels = np.array(picture)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels.max() > 150


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"channels": 2}, "channels"),
        ({"n_images": 0}, "n_images"),
        ({"resolution": 8}, "resolution"),
        ({"seed": -1}, "seed"),
    ],
)
def test_png_slices_bad_arguments(tmp_path: pathlib.Path, arguments: dict, message: str) -> None:
    with pytest.raises(TfmedganError, match=message):
        slices.make_png_slices(tmp_path, **{"n_images": 1, "resolution": 32, **arguments})


# ----------------------------------------------------------------------------------------------
# cached slices folder
# ----------------------------------------------------------------------------------------------


def test_sample_slices_dir_generates_once_then_reuses(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFMEDGAN_CACHE", str(tmp_path / "cache"))
    folder = slices.sample_slices_dir(resolution=32, n_images=4, seed=1)
    assert folder == tmp_path / "cache" / "slices_r32_n4_s1"
    expected = [f"slice_{index:05d}.png" for index in range(4)]
    assert sorted(path.name for path in folder.iterdir()) == expected
    # no temporary folder is left behind
    assert [path.name for path in (tmp_path / "cache").iterdir()] == ["slices_r32_n4_s1"]
    # same content as a direct call
    direct = slices.make_png_slices(tmp_path / "direct", n_images=4, resolution=32, seed=1)
    assert _read_bytes(folder) == _read_bytes(direct)

    modification_times = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached folder was regenerated")

    monkeypatch.setattr(slices, "make_png_slices", must_not_run)
    assert slices.sample_slices_dir(resolution=32, n_images=4, seed=1) == folder
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == modification_times


def test_sample_slices_dir_repairs_incomplete_cache(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFMEDGAN_CACHE", str(tmp_path))
    folder = slices.sample_slices_dir(resolution=32, n_images=3, seed=0)
    (folder / "slice_00001.png").unlink()
    again = slices.sample_slices_dir(resolution=32, n_images=3, seed=0)
    assert again == folder
    assert len(list(folder.glob("*.png"))) == 3
