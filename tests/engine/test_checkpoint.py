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
