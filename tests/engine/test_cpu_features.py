"""tfmedgan turns TensorFlow's oneDNN kernels on by default on x86-64, and leaves a user's choice alone."""

import os
import platform
import subprocess
import sys

import pytest

from tfmedgan.engine.cpu_features import ONEDNN_VARIABLE, use_onednn_by_default


def test_sets_the_variable_only_when_unset_and_only_on_x86_64():
    environ: dict[str, str] = {}
    assert use_onednn_by_default(environ, machine="x86_64") is True
    assert environ == {ONEDNN_VARIABLE: "1"}
    for choice in ("0", "1"):
        environ = {ONEDNN_VARIABLE: choice}
        assert use_onednn_by_default(environ, machine="x86_64") is False
        assert environ == {ONEDNN_VARIABLE: choice}
    environ = {}
    assert use_onednn_by_default(environ, machine="aarch64") is False
    assert environ == {}
    assert use_onednn_by_default({}, machine="AMD64") is True


def _tensorflow_start_up(extra_environment: dict[str, str]) -> str:
    """stderr of a fresh ``import tfmedgan, tensorflow`` with TensorFlow's info lines shown."""
    environment = {k: v for k, v in os.environ.items() if k != ONEDNN_VARIABLE}
    environment.update(TF_CPP_MIN_LOG_LEVEL="0", CUDA_VISIBLE_DEVICES="", **extra_environment)
    code = "import tfmedgan, tensorflow as tf; tf.constant(1.0) + 1.0"
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN default is x86-64 only")
def test_importing_tfmedgan_first_turns_onednn_on_unless_the_user_said_0():
    # On an AVX2-only CPU TensorFlow alone prints no such line; on AVX-512/AMX CPUs it would anyway.
    assert "oneDNN custom operations are on" in _tensorflow_start_up({})
    assert "oneDNN custom operations are on" not in _tensorflow_start_up({ONEDNN_VARIABLE: "0"})
