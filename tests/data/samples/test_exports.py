"""tfmedgan.data.samples keeps every public name of the former data/sample.py and data/phantom.py."""

import subprocess
import sys

from tfmedgan.data import samples

FORMER_SAMPLE_NAMES = ["BRAINWEB_T1", "BRAINWEB_T2", "MNI152Templates", "load_mni152", "tissue_probabilities",
                       "synthetic_t1_t2", "make_png_slices", "sample_slices_dir", "make_paired_subjects", "cache_root"]
FORMER_PHANTOM_NAMES = ["fibre_composite", "block_downsample", "microct_pair", "write_phantom_dataset"]


def test_former_names_are_re_exported():
    assert set(FORMER_SAMPLE_NAMES + FORMER_PHANTOM_NAMES) <= set(samples.__all__)
    for name in samples.__all__:
        assert getattr(samples, name) is not None
    from tfmedgan.data.samples import write_phantom_dataset  # lazy name, from-import form
    from tfmedgan.data.samples.phantom import write_phantom_dataset as direct

    assert write_phantom_dataset is direct


def test_phantom_is_imported_on_first_use_only():
    code = ("import sys, tfmedgan.data.samples as s; assert 'tfmedgan.data.samples.phantom' not in sys.modules; "
            "s.microct_pair; assert 'tfmedgan.data.samples.phantom' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
