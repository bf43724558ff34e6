"""tfmedgan.metrics keeps every public name the former single module had."""

from tfmedgan import metrics

FORMER_PUBLIC_NAMES = ["WINDOW_SIZE", "K1", "K2", "ssim", "ssim_map", "ssim_many", "best_match", "psnr", "mae",
                       "mutual_information"]


def test_former_names_are_re_exported():
    assert set(FORMER_PUBLIC_NAMES) <= set(metrics.__all__)
    for name in metrics.__all__:
        assert getattr(metrics, name) is not None
    assert callable(metrics.ssim) and metrics.ssim.__module__ == "tfmedgan.metrics.structural_similarity"
    assert metrics.best_match.__module__ == "tfmedgan.metrics.search"
    assert metrics.psnr.__module__ == "tfmedgan.metrics.intensity"
    assert (metrics.WINDOW_SIZE, metrics.K1, metrics.K2) == (7, 0.01, 0.03)
