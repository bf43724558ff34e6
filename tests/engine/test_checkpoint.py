import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.engine import checkpoint as ckpt
from tfmedgan.errors import TfmedganError


def _variables(seed):
    rng = np.random.default_rng(seed)
    return [tf.Variable(rng.normal(size=(3, 4)).astype("float32")), tf.Variable(rng.normal(size=(5,)).astype("float32"))]


def test_round_trip_is_exact_and_keeps_only_the_newest(tmp_path):
    source = _variables(0)
    for step in (1, 2, 3):
        path = ckpt.save_checkpoint(tmp_path, step, {"net": source}, {"step": step, "epoch": 7}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-000000002.npz", "ckpt-000000003.npz"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    target = _variables(1)
    counters = ckpt.restore_checkpoint(path, {"net": target})
    assert counters == {"step": 3, "epoch": 7}
    for a, b in zip(source, target):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_restore_refuses_another_architecture(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 1, {"net": _variables(0)}, {"step": 1})
    with pytest.raises(TfmedganError, match="shape"):
        ckpt.restore_checkpoint(path, {"net": [tf.Variable(np.zeros((4, 4), "float32")), tf.Variable(np.zeros(5, "float32"))]})
    with pytest.raises(TfmedganError, match="different configuration"):
        ckpt.restore_checkpoint(path, {"net": _variables(0)[:1]})


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, 1, {"net": _variables(0)}, {"step": 1})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.np, "savez", broken)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, 2, {"net": _variables(0)}, {"step": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000001.npz"]


# -- damaged checkpoints (issue 10, section 2) ---------------------------------------------------
def _two_checkpoints(folder):
    first = ckpt.save_checkpoint(folder, 1, {"net": _variables(0)}, {"step": 1})
    second = ckpt.save_checkpoint(folder, 2, {"net": _variables(1)}, {"step": 2})
    return first, second


def _truncate_to_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_verify_checkpoint_accepts_a_complete_one_and_refuses_a_truncated_one(tmp_path):
    first, second = _two_checkpoints(tmp_path)
    assert ckpt.verify_checkpoint(first) and ckpt.verify_checkpoint(second)
    _truncate_to_half(second)
    assert not ckpt.verify_checkpoint(second)
    assert ckpt.latest_valid_checkpoint(tmp_path) == first


def test_verify_checkpoint_detects_a_changed_payload(tmp_path):
    # the zip stays readable but one array no longer matches the stored SHA-256
    path = ckpt.save_checkpoint(tmp_path, 1, {"net": _variables(0)}, {"step": 1})
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    arrays["net/00000"] = arrays["net/00000"] + 1.0
    with path.open("wb") as stream:
        np.savez(stream, **arrays)
    assert not ckpt.verify_checkpoint(path)
    with pytest.raises(TfmedganError, match="checksum"):
        ckpt.verify_checkpoint(path, raise_reason=True)


def test_truncated_newest_falls_back_to_the_previous_with_one_warning(tmp_path, capsys):
    _, second = _two_checkpoints(tmp_path)
    _truncate_to_half(second)
    target = _variables(5)
    path, counters = ckpt.restore_newest_valid(tmp_path, {"net": target})
    assert path.name == "ckpt-000000001.npz" and counters == {"step": 1}
    np.testing.assert_array_equal(target[0].numpy(), _variables(0)[0].numpy())
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "ckpt-000000002.npz" in err[0] and "ckpt-000000001.npz" in err[0] and err[0].startswith("warning:")
    # the damaged file is kept aside, so pruning after the next save keeps the good one
    assert (tmp_path / "ckpt-000000002.npz.damaged").is_file()
    ckpt.save_checkpoint(tmp_path, 3, {"net": _variables(2)}, {"step": 3}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-000000001.npz", "ckpt-000000003.npz"]


def test_garbage_newest_falls_back(tmp_path, capsys):
    _, second = _two_checkpoints(tmp_path)
    second.write_bytes(np.random.default_rng(0).bytes(4000))
    path, counters = ckpt.restore_newest_valid(tmp_path, {"net": _variables(5)})
    assert path.name == "ckpt-000000001.npz" and counters["step"] == 1
    assert "ckpt-000000002.npz" in capsys.readouterr().err


def test_all_checkpoints_damaged_is_one_line_error_and_none_is_none(tmp_path):
    assert ckpt.restore_newest_valid(tmp_path, {"net": _variables(5)}) is None
    assert ckpt.latest_valid_checkpoint(tmp_path) is None
    for path in _two_checkpoints(tmp_path):
        _truncate_to_half(path)
    target = _variables(5)
    before = [v.numpy().copy() for v in target]
    with pytest.raises(TfmedganError) as caught:
        ckpt.restore_newest_valid(tmp_path, {"net": target})
    message = str(caught.value)
    assert "\n" not in message and "no readable checkpoint" in message
    for value, variable in zip(before, target):  # nothing was half-assigned
        np.testing.assert_array_equal(value, variable.numpy())


def test_restore_of_a_truncated_checkpoint_is_a_one_line_error_not_a_traceback(tmp_path):
    _, second = _two_checkpoints(tmp_path)
    _truncate_to_half(second)
    with pytest.raises(TfmedganError, match="cannot read checkpoint") as caught:
        ckpt.restore_checkpoint(second, {"net": _variables(5)})
    assert "\n" not in str(caught.value)


def test_old_checkpoint_without_marker_still_loads(tmp_path):
    # written as before the checksum existed: a plain npz of the variables and counters
    source = _variables(3)
    path = tmp_path / "ckpt-000000004.npz"
    with path.open("wb") as stream:
        np.savez(stream, **{"net/00000": source[0].numpy(), "net/00001": source[1].numpy(), "counter/step": np.asarray(4)})
    assert ckpt.verify_checkpoint(path)
    target = _variables(5)
    found, counters = ckpt.restore_newest_valid(tmp_path, {"net": target})
    assert found == path and counters == {"step": 4}
    np.testing.assert_array_equal(target[1].numpy(), source[1].numpy())
    _truncate_to_half(path)
    assert not ckpt.verify_checkpoint(path)
