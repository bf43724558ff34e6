"""Precision policies: float16 refused without a GPU, a warning for emulated bfloat16."""

import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from tfmedgan.engine.precision import cpu_has_native_bfloat16, set_precision
from tfmedgan.errors import TfmedganError

AVX2_ONLY = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2\n\n" \
            "processor\t: 1\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("text, expected", [(AVX2_ONLY, False), (SAPPHIRE_RAPIDS, True), (ARM_BF16, True),
                                            ("processor\t: 0\n", None)])
def test_cpu_has_native_bfloat16_reads_the_flags(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_has_native_bfloat16(cpuinfo) is expected
    assert cpu_has_native_bfloat16(tmp_path / "missing") is None


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="the warning is for CPU-only machines")
def test_mixed_bfloat16_warns_in_one_line_where_it_is_emulated_and_still_sets_the_policy(tmp_path, capsys):
    emulated, native = tmp_path / "avx2", tmp_path / "amx"
    emulated.write_text(AVX2_ONLY)
    native.write_text(SAPPHIRE_RAPIDS)
    set_precision("mixed_bfloat16", cpuinfo=emulated)
    warning = capsys.readouterr().err
    assert warning.startswith("warning: --precision mixed_bfloat16") and "float32" in warning
    assert warning.count("\n") == 1
    assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    for precision, cpuinfo in (("mixed_bfloat16", native), ("float32", emulated), ("mixed_bfloat16", tmp_path / "x")):
        set_precision(precision, cpuinfo=cpuinfo)
        assert capsys.readouterr().err == ""
        assert keras.mixed_precision.dtype_policy().name == precision
    with pytest.raises(TfmedganError, match="mixed_float16 needs a GPU"):
        set_precision("mixed_float16", cpuinfo=native)


def test_the_cpu_check_imports_no_tensorflow():
    """bench/quality.py's parent process reads the flags without loading TensorFlow."""
    code = "import sys; from tfmedgan.engine.cpu_features import cpu_has_native_bfloat16; " \
           "cpu_has_native_bfloat16(); print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
