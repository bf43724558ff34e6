"""The run directory: one folder per run holding its config, logs, plots, samples and checkpoints.

Layout::

    OUTPUT_DIR/<name>/
        config.json        every resolved option (read back by --resume)
        losses.csv         one row per logged step: step, epoch, then one column per loss
        loss_curve.png     the logged columns against the step, one panel per group, redrawn at every sample epoch
        samples/           image grids from fixed latents, one per sample epoch
        checkpoints/       full training state, written atomically, last K kept
        models/            exported ``.keras`` networks at the end of training
        .lock              held (flock) by the process training this run; holds its PID
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import math
import os
import socket
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from tfmedgan.errors import TfmedganError


class RunDirectory:
    """Files of one run. Use :meth:`create` for a new run and :meth:`open` to resume one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, output_dir: str | Path, name: str) -> "RunDirectory":
        """Create ``output_dir/name``; refuse an existing folder so no earlier run is overwritten."""
        path = Path(output_dir) / name
        if path.exists():
            raise TfmedganError(f"run directory {path} already exists: pick another --name or use --resume {path}")
        try:
            path.mkdir(parents=True)
        except OSError as error:
            raise TfmedganError(f"cannot create run directory {path}: {error.strerror}") from None
        for sub in ("samples", "checkpoints", "models"):
            (path / sub).mkdir()
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> "RunDirectory":
        """Open an existing run for resuming; it must hold a config.json."""
        path = Path(path)
        if not path.is_dir():
            raise TfmedganError(f"--resume {path}: {'not a directory' if path.exists() else 'no such directory'}")
        if not (path / "config.json").is_file():
            raise TfmedganError(f"--resume {path}: not a tfmedgan run directory (no config.json)")
        for sub in ("samples", "checkpoints", "models"):
            (path / sub).mkdir(exist_ok=True)
        return cls(path)

    @staticmethod
    def default_name(model: str) -> str:
        return f"{model}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"

    # -- exclusive use --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator["RunDirectory"]:
        """Hold an exclusive lock on the run for the duration of the ``with`` block.

        The lock is ``flock`` on ``RUN/.lock``, which also records the holder's PID and host. The
        kernel releases it when the holder exits in any way (also SIGKILL), so a lock file left by
        a killed process never blocks. The file itself stays; only the flock counts. On platforms
        without ``fcntl`` the lock is a no-op.

        Raises:
            TfmedganError: when another process (or another ``lock()`` in this one) holds the run.

        Example::

            with run_dir.lock():
                trainer.fit()
        """
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks
            yield self
            return
        path = self.path / ".lock"
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise TfmedganError(f"cannot create the lock file {path}: {error.strerror}") from None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TfmedganError(
                    f"run directory {self.path} is in use by {_lock_holder(descriptor)}: "
                    "wait for it to finish or stop it first"
                ) from None
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            os.fsync(descriptor)
            try:
                yield self
            finally:
                os.ftruncate(descriptor, 0)
                fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            os.close(descriptor)

    # -- paths ----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def losses_path(self) -> Path:
        return self.path / "losses.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def models(self) -> Path:
        return self.path / "models"

    # -- losses ---------------------------------------------------------------------------------
    def append_losses(self, rows: Sequence[Mapping[str, float]]) -> None:
        """Append rows to losses.csv (header written on first use)."""
        if not rows:
            return
        fields = list(rows[0].keys())
        new = not self.losses_path.exists()
        with self.losses_path.open("a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def read_losses(self) -> list[dict[str, float]]:
        if not self.losses_path.exists():
            return []
        rows = []
        with self.losses_path.open(newline="") as stream:
            for row in csv.DictReader(stream):
                try:  # a process killed mid-write can leave a partial last line: skip it
                    rows.append({k: float(v) for k, v in row.items() if k is not None})
                except (TypeError, ValueError):
                    continue
        return rows

    def truncate_losses(self, last_step: int) -> None:
        """Drop rows after ``last_step`` (written after the checkpoint a resumed run restarts from)."""
        rows = [r for r in self.read_losses() if r["step"] <= last_step]
        rows = [{k: (int(v) if k in ("step", "epoch") else v) for k, v in r.items()} for r in rows]
        temporary = self.losses_path.with_name(".tmp-losses.csv")
        temporary.unlink(missing_ok=True)
        if rows:
            with temporary.open("w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=list(rows[0].keys()))
                writer.writeheader()
                writer.writerows(rows)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.losses_path)  # the old history stays until the new one is complete
        else:
            self.losses_path.unlink(missing_ok=True)

    def plot_losses(self, validation_rows: Sequence[Mapping[str, float]] = ()) -> Path | None:
        """Redraw loss_curve.png from losses.csv: one panel per column group (:func:`plot_groups`:
        the losses, then loss weights, learning rates, other schedules and truth tables when the
        log has them), all against the step; noisy groups get a moving average. With validation
        rows, a last panel shows the validation metrics."""
        rows = self.read_losses()
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = np.array([r["step"] for r in rows])
        groups = plot_groups([k for k in rows[0] if k not in ("step", "epoch")])
        panels = len(groups) + bool(validation_rows)
        figure, axes = plt.subplots(panels, 1, figsize=(8, 1.5 + 3 * panels), sharex=True, squeeze=False)
        axes = [row[0] for row in axes]
        window = max(1, len(rows) // 50)
        for axis, (label, names, smooth) in zip(axes, groups):
            for name in names:
                values = np.array([r.get(name, np.nan) for r in rows])
                if smooth and window > 1:
                    line = axis.plot(steps, values, alpha=0.3, linewidth=0.8)[0]
                    moving = np.convolve(values, np.ones(window) / window, mode="valid")
                    axis.plot(steps[window - 1 :], moving, color=line.get_color(), label=name)
                else:
                    axis.plot(steps, values, label=name)
            axis.set_ylabel(label)
            axis.legend(loc="upper left", fontsize="small", ncol=1 + len(names) // 6)
            axis.grid(alpha=0.3)
        if validation_rows:
            validation_axis = axes[-1]
            metrics = [k for k in validation_rows[0] if k not in ("step", "epoch")]
            for name in metrics:
                points = [(r["step"], r[name]) for r in validation_rows if name in r]
                validation_axis.plot(*zip(*points), marker="o", label=name)
            validation_axis.set_ylabel("validation")
            validation_axis.legend(loc="best")
            validation_axis.grid(alpha=0.3)
        axes[-1].set_xlabel("step")
        figure.tight_layout()
        target = self.path / "loss_curve.png"
        save_figure_atomic(figure, target)
        plt.close(figure)
        return target


#: Column groups of losses.csv drawn in panels of their own, in this order after the losses:
#: (y-axis label, column-name prefixes, smoothed with a moving average).
PLOT_GROUPS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("loss weight", ("w_",), False),
    ("learning rate", ("lr",), False),
    ("schedule", ("alpha",), False),
    ("truth table", ("tt_",), True),
)


def plot_groups(columns: Sequence[str]) -> list[tuple[str, list[str], bool]]:
    """Split loss-log columns into plot panels: ``(label, columns, smoothed)`` for the losses (every
    column no :data:`PLOT_GROUPS` prefix claims), then each group of :data:`PLOT_GROUPS` present.

    Example:
        >>> [(label, names) for label, names, _ in plot_groups(["d_loss", "g_loss", "lr_g", "w_C_A", "tt_D_A_tp"])]
        [('loss', ['d_loss', 'g_loss']), ('loss weight', ['w_C_A']), ('learning rate', ['lr_g']), ('truth table', ['tt_D_A_tp'])]
    """
    claimed: dict[str, list[str]] = {label: [] for label, _, _ in PLOT_GROUPS}
    losses = []
    for column in columns:
        label = next((label for label, prefixes, _ in PLOT_GROUPS if column.startswith(prefixes)), None)
        (claimed[label] if label else losses).append(column)
    groups = [("loss", losses, True)] if losses else []
    groups += [(label, claimed[label], smooth) for label, _, smooth in PLOT_GROUPS if claimed[label]]
    return groups



def _lock_holder(descriptor: int) -> str:
    """'process PID' (plus 'on HOST' when another machine holds it), read from the lock file."""
    words = os.pread(descriptor, 256, 0).decode(errors="replace").split()
    if not words:  # the holder has the lock but has not written its PID yet
        return "another process"
    holder = f"process {words[0]}"
    if len(words) > 1 and words[1] != socket.gethostname():
        holder += f" on {words[1]}"
    return holder


def image_grid(images: np.ndarray, columns: int | None = None, scaling: str = "per_image") -> np.ndarray:
    """Tile images [N, H, W, C] into one uint8 grid [rows*H, cols*W, C].

    Args:
        images: float images, nominally in [-1, 1].
        columns: grid columns (default: ceil(sqrt(N))).
        scaling: ``"per_image"`` (default) stretches each image from its own minimum to its own
            maximum, as ``matplotlib.pyplot.imshow(image, cmap="gray")`` displayed the originals'
            previews; a constant image becomes black. ``"fixed"`` maps [-1, 1] to [0, 255] and clips.

    Example:
        >>> image_grid(np.zeros((4, 8, 8, 1)), scaling="fixed").shape
        (16, 16, 1)
    """
    if scaling not in ("per_image", "fixed"):
        raise ValueError(f"scaling must be 'per_image' or 'fixed', got {scaling!r}")
    images = np.asarray(images, dtype=np.float32)
    count, height, width, channels = images.shape
    columns = columns or int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / columns))
    grid = np.zeros((rows * height, columns * width, channels), np.uint8)
    if scaling == "fixed":
        pixels = np.clip((images + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    else:
        low = images.min(axis=(1, 2, 3), keepdims=True)
        span = images.max(axis=(1, 2, 3), keepdims=True) - low
        scaled = np.where(span > 0, (images - low) / np.where(span > 0, span, 1.0), 0.0)
        pixels = np.clip(scaled * 255.0, 0, 255).round().astype(np.uint8)
    for index in range(count):
        r, c = divmod(index, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = pixels[index]
    return grid


def save_png_atomic(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 image [H, W] or [H, W, C] as PNG via a temporary file."""
    from PIL import Image

    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    temporary = path.with_name(f".tmp-{path.name}")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)
    return path


def save_figure_atomic(figure, path: str | Path) -> Path:
    path = Path(path)
    temporary = path.with_name(f".tmp-{path.name}")
    figure.savefig(temporary, dpi=100, format="png")
    os.replace(temporary, path)
    return path


def figure_to_rgb(figure, title: str = "") -> np.ndarray:
    """Render a matplotlib figure (optional suptitle) to a uint8 RGB array and close it."""
    import matplotlib.pyplot as plt

    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image
