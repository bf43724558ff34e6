"""loss_curve.png: one panel per group of logged columns (losses, weights, rates, truth tables)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tfmedgan.engine.rundir import RunDirectory, plot_groups

SR_COLUMNS = ["loss_G_A_bce", "loss_C_A_l1", "loss_g_total", "kickstart", "tt_D_A_tp", "tt_D_A_fp",
              "w_G_A_bce", "w_C_A_l1", "lr_g", "lr_d"]


def test_columns_are_grouped_by_prefix():
    groups = plot_groups(SR_COLUMNS)
    assert [(label, names) for label, names, _ in groups] == [
        ("loss", ["loss_G_A_bce", "loss_C_A_l1", "loss_g_total", "kickstart"]),
        ("loss weight", ["w_G_A_bce", "w_C_A_l1"]),
        ("learning rate", ["lr_g", "lr_d"]),
        ("truth table", ["tt_D_A_tp", "tt_D_A_fp"]),
    ]
    assert [smooth for _, _, smooth in groups] == [True, False, False, True]
    assert [label for label, _, _ in plot_groups(["d_loss", "g_loss", "alpha"])] == ["loss", "schedule"]
    assert [label for label, _, _ in plot_groups(["regressor_loss"])] == ["loss"]


def test_seed_002_log_gets_one_panel_per_group_plus_validation(tmp_path):
    run_dir = RunDirectory.create(tmp_path, "run")
    rng = np.random.default_rng(0)
    rows = [{"step": step, "epoch": step // 10, **{name: float(rng.uniform()) for name in SR_COLUMNS}}
            for step in range(1, 121)]
    run_dir.append_losses(rows)
    path = run_dir.plot_losses()
    with Image.open(path) as image:
        assert image.size == (800, 1350)  # 4 panels of 3 in + 1.5 in, 100 dpi
    validation = [{"step": 60.0, "epoch": 5.0, "cycle_a_l1": 0.4}, {"step": 120.0, "epoch": 11.0, "cycle_a_l1": 0.3}]
    with Image.open(run_dir.plot_losses(validation)) as image:
        assert image.size == (800, 1650)  # and the validation panel
    only_losses = RunDirectory.create(tmp_path, "toy")
    only_losses.append_losses([{"step": s, "epoch": 0, "d_loss": 1.0 / s} for s in range(1, 5)])
    with Image.open(only_losses.plot_losses()) as image:
        assert image.size == (800, 450)  # one panel, as before
