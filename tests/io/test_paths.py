"""check_output_dir: one-line errors for an OUT_DIR that is a file or a non-empty folder."""

import pytest

from tfmedgan.errors import TfmedganError
from tfmedgan.io.paths import check_output_dir


def _one_line(call, fragment):
    with pytest.raises(TfmedganError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and fragment in message, message
    return message


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_regular_file_is_named_a_file_with_or_without_overwrite(tmp_path, overwrite):
    target = tmp_path / "out"
    target.write_text("my notes")
    message = _one_line(lambda: check_output_dir(target, overwrite), "is a file, not a folder")
    assert str(target) in message and "not empty" not in message
    assert target.read_text() == "my notes"  # never touched


def test_a_non_empty_folder_needs_overwrite(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.png").write_bytes(b"x")
    _one_line(lambda: check_output_dir(target, False), f"output folder {target} exists and is not empty (use --overwrite)")
    assert check_output_dir(target, True) == target


def test_missing_or_empty_folders_are_fine_and_not_created(tmp_path):
    assert check_output_dir(tmp_path / "new" / "deeper", False) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert check_output_dir(str(tmp_path / "empty"), False) == tmp_path / "empty"


def test_a_file_in_the_way_of_a_missing_folder(tmp_path):
    (tmp_path / "blocker").write_text("x")
    _one_line(lambda: check_output_dir(tmp_path / "blocker" / "out", True), f"{tmp_path / 'blocker'} is a file, not a folder")


def test_a_broken_symlink(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    _one_line(lambda: check_output_dir(tmp_path / "link", True), "broken symbolic link")
