"""Figure: held-out T1w -> T2w translations of the quality bench, side by side, with their errors.

Draws, for one held-out subject of the bench (``bench/quality.py --models cyclegan3d-cpu...``), a
mid-slice of the T1w input, the T2w truth, the intensity look-up table and each given run's
translation (a folder of ``*_synthetic.nii.gz`` that the bench's evaluation wrote), each fitted
onto the truth as the bench scores it. The second row shows the absolute error inside the brain
mask, with the ring-wise error near the mask's edge in the titles, where the table and the
original generator fail (docs/cyclegan3d.md, "The brain's edge").

    python bench/figure_translations.py --work bench/results/quality/work \\
        "no mask, step 650=RUN_A/eval/...-step000650" "--mask-background, step 650=RUN_B/eval/...-step000650" \\
        --out docs/img/cyclegan3d_edge.png
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tfmedgan  # noqa: E402,F401  (before TensorFlow: turns oneDNN on where TF would not)

import numpy as np  # noqa: E402

import quality_protocols  # noqa: E402  (bench/quality_protocols.py)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=FOLDER", help="a label and a folder of *_synthetic.nii.gz")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "quality" / "work",
                        help="the quality bench's work folder (its held-out subjects are used)")
    parser.add_argument("--subject", type=int, default=0, help="index of the held-out subject (default: 0)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from scipy import ndimage

    protocol = quality_protocols.protocols()["cyclegan3d-cpu"]
    protocol.prepare(args.work)
    if not 0 <= args.subject < len(protocol.heldout):
        raise SystemExit(f"error: --subject must be in 0..{len(protocol.heldout) - 1}")
    path, t1, t2 = protocol.heldout[args.subject]
    mask = (t1 > 0) & (t2 > 0)
    truth = quality_protocols._unit_truth(t2, mask)
    table = quality_protocols.IntensityLookUpTable().fit(protocol.train_pairs_or_load())
    panels = [("look-up table", table(t1, mask))]
    for run in args.runs:
        if "=" not in run:
            raise SystemExit(f"error: {run!r} is not LABEL=FOLDER")
        label, folder = run.split("=", 1)
        file = Path(folder) / path.name.replace(".nii.gz", "_synthetic.nii.gz")
        if not file.is_file():
            raise SystemExit(f"error: {file} does not exist")
        panels.append((label, np.asarray(nib.load(file).dataobj, np.float32)))

    edge = mask & (ndimage.distance_transform_edt(mask) <= 1.0)
    z = int(np.argmax(mask.sum(axis=(0, 1))))  # the axial slice with the most brain
    columns = 2 + len(panels)
    figure, axes = plt.subplots(2, columns, figsize=(2.6 * columns, 5.6))
    view = lambda volume: np.rot90(volume[:, :, z])  # noqa: E731
    axes[0, 0].imshow(view(np.where(mask, quality_protocols._unit_truth(t1, mask), 0.0)), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("T1w input", fontsize=9)
    axes[0, 1].imshow(view(truth), cmap="gray", vmin=0, vmax=1)
    axes[0, 1].set_title("T2w truth (held out)", fontsize=9)
    for column, (label, prediction) in enumerate(panels, start=2):
        fitted = np.where(mask, quality_protocols.linear_fit(prediction, truth, mask), 0.0)
        scores = quality_protocols.translation_scores(prediction, t2, mask)
        error = np.abs(fitted - truth) * mask
        edge_mse = float(np.mean((fitted - truth)[edge] ** 2))
        axes[0, column].imshow(view(fitted), cmap="gray", vmin=0, vmax=1)
        axes[0, column].set_title(f"{label}\n{scores['psnr']:.2f} dB, SSIM {scores['ssim']:.3f}", fontsize=9)
        axes[1, column].imshow(view(error), cmap="magma", vmin=0, vmax=0.4)
        axes[1, column].set_title(f"|error|; outermost voxels\nMSE {edge_mse:.4f}", fontsize=9)
    for axis in axes.ravel():
        axis.axis("off")
    figure.suptitle(f"{path.name.split('_T1w')[0]}, axial slice {z}: scores over the whole held-out volume", fontsize=10)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
