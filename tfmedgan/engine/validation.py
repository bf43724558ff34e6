"""The validation history of a run: ``validation.csv`` rows and the best score so far."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Mapping

from tfmedgan.errors import TfmedganError


class ValidationHistory:
    """Rows ``step, epoch, <metric>...`` in ``RUN/validation.csv``, written atomically.

    Args:
        run_dir: the run directory (``.path``).
        metric: ``(name, "max" | "min")`` deciding the best model, or None.
    """

    def __init__(self, run_dir, metric: tuple[str, str] | None = None):
        self.path = Path(run_dir.path) / "validation.csv"
        if metric is not None and metric[1] not in ("max", "min"):
            raise TfmedganError(f"validation metric direction must be max or min, got {metric[1]!r}")
        self.metric = metric

    def rows(self) -> list[dict[str, float]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as stream:
            rows = []
            for row in csv.DictReader(stream):
                try:
                    rows.append({k: float(v) for k, v in row.items() if k is not None and v not in (None, "")})
                except ValueError:
                    continue
            return rows

    def has_step(self, step: int) -> bool:
        return any(int(r["step"]) == step for r in self.rows())

    def best(self) -> float | None:
        """The best value of the main metric so far (None without rows or metric)."""
        if self.metric is None:
            return None
        name, direction = self.metric
        values = [r[name] for r in self.rows() if name in r and math.isfinite(r[name])]
        if not values:
            return None
        return max(values) if direction == "max" else min(values)

    def append(self, step: int, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Add a row; True when the main metric improved on every earlier row."""
        previous = self.best()
        rows = [r for r in self.rows() if r["step"] < step] + [{"step": step, "epoch": epoch, **metrics}]
        self._write(rows)
        if self.metric is None:
            return False
        name, direction = self.metric
        value = float(metrics.get(name, math.nan))
        if not math.isfinite(value):
            return False
        return previous is None or (value > previous if direction == "max" else value < previous)

    def truncate(self, last_step: int) -> None:
        """Drop rows after ``last_step`` (a resumed or rolled-back run repeats them)."""
        rows = self.rows()
        kept = [r for r in rows if r["step"] <= last_step]
        if len(kept) != len(rows):
            self._write(kept)

    def _write(self, rows: list[dict[str, float]]) -> None:
        if not rows:
            self.path.unlink(missing_ok=True)
            return
        fields: list[str] = []
        for row in rows:
            fields += [k for k in row if k not in fields]
        temporary = self.path.with_name(".tmp-validation.csv")
        with temporary.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (int(v) if k in ("step", "epoch") else f"{v:.6g}") for k, v in row.items()})
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self.path)
