"""Tests of the top-level ``prepare_train_data.py`` command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.io.test_crop import make_dataset, tree_hashes
from tests.io.test_nifti import blob, save

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "prepare_train_data.py"
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

import prepare_train_data  # noqa: E402


def run_script(*arguments: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=str(REPOSITORY),
    )


def test_script_success_and_refusal(tmp_path):
    source = make_dataset(tmp_path, count=3)
    before = tree_hashes(source)
    result = run_script(str(source), "--margin", "1", "--multiple", "4", "--seed", "2")
    assert result.returncode == 0, result.stderr
    assert "Smallest recommended input image shape: (" in result.stdout
    assert result.stdout.count("Cropping ") == 3
    output = tmp_path / "MR_crop"
    folders = sorted(entry.name for entry in output.iterdir())
    assert folders == ["testA", "testB", "trainA", "trainB"]
    assert len(list((output / "testA").iterdir())) == 1  # 10% of 3 pairs, at least one
    assert tree_hashes(source) == before

    # Second run: the output exists -> one error line, exit status 2, output untouched.
    snapshot = tree_hashes(output)
    result = run_script(str(source))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(output) in lines[0]
    assert "--overwrite" in lines[0]
    assert tree_hashes(output) == snapshot

    result = run_script(str(source), "--overwrite", "--test-fraction", "0")
    assert result.returncode == 0, result.stderr
    assert list((output / "testA").iterdir()) == []


def test_main_custom_output(tmp_path, capsys):
    source = make_dataset(tmp_path, count=2)
    destination = tmp_path / "elsewhere" / "crops"
    arguments = [str(source), "--output", str(destination), "--multiple", "2"]
    assert prepare_train_data.main(arguments) == 0
    captured = capsys.readouterr()
    assert "Smallest recommended input image shape: (" in captured.out
    assert captured.err == ""
    assert (destination / "trainA").is_dir()
    assert not (tmp_path / "MR_crop").exists()


def _extra_b_file(source: Path) -> Path:
    save(source / "trainB" / "extra_T2w.nii.gz", blob())
    return source / "trainB"  # the count error names the folders


def _four_d_file(source: Path) -> Path:
    return save(source / "trainA" / "sub-00_T1w.nii.gz", blob()[..., None].repeat(2, -1))


def _csv_file(source: Path) -> Path:
    path = source / "trainB" / "list.csv"
    path.write_text("a,b")
    return path


def _zero_affine_pair(source: Path) -> Path:
    from tests.io.test_crop import _break_zero_affine

    return _break_zero_affine(source)


@pytest.mark.parametrize(
    "breaker",
    [_extra_b_file, _four_d_file, _csv_file, _zero_affine_pair],
    ids=["count", "4d", "csv", "zero-affine"],
)
def test_main_bad_input_one_line_exit_2(tmp_path, capsys, breaker):
    source = make_dataset(tmp_path, count=2)
    bad = breaker(source)
    assert prepare_train_data.main([str(source)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(bad) in lines[0]
    assert not (tmp_path / "MR_crop").exists()


def test_main_bad_option_values(tmp_path, capsys):
    source = make_dataset(tmp_path, count=2)
    assert prepare_train_data.main([str(source), "--test-fraction", "1"]) == 2
    assert prepare_train_data.main([str(source), "--margin", "-1"]) == 2
    assert prepare_train_data.main([str(tmp_path / "missing")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)


def test_main_pair_by_order_flag(tmp_path, capsys):
    source = make_dataset(tmp_path, count=2)
    (source / "trainB" / "sub-00_T2w.nii.gz").rename(source / "trainB" / "sub-00b_T2w.nii.gz")
    assert prepare_train_data.main([str(source), "--test-fraction", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "sub-00_T1w.nii.gz ~ sub-00b_T2w.nii.gz" in lines[0] and "--pair-by-order" in lines[0]
    assert not (tmp_path / "MR_crop").exists()
    assert prepare_train_data.main([str(source), "--test-fraction", "0", "--pair-by-order"]) == 0
    assert sorted(p.name for p in (tmp_path / "MR_crop" / "trainB").iterdir()) == ["sub-00b_T2w.nii.gz", "sub-01_T2w.nii.gz"]
