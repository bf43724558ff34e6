"""The Python API: train a model, open a run, generate or translate with it (the CLI is a thin
layer over these functions).

Example (in a notebook)::

    import tfmedgan

    run = tfmedgan.train("dcgan", sample_data=True, output_dir="runs", resolution=64, epochs=5)
    images = run.generate(16)                      # [16, 64, 64, 1] in [-1, 1]
    run = tfmedgan.load_run("runs/dcgan-20261201-120000")
    run = tfmedgan.train("dcgan", resume=run.path, epochs=10)   # continue, with more epochs
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tfmedgan.engine.config import RESUMABLE_FIELDS, EngineConfig, read_config
from tfmedgan.errors import TfmedganError


def configure(model: str, preset: str | None = None, sample_data: bool = False, **options: Any) -> EngineConfig:
    """A validated config for ``model`` from its defaults, an optional preset and ``options``.

    With ``sample_data`` the data fields are filled with the model's built-in sample data (written
    on first use, then cached).
    """
    from tfmedgan.models import get_model

    spec = get_model(model)
    config = spec.config(preset=preset, **options)
    if sample_data:
        if spec.sample_data is None:
            raise TfmedganError(f"{model} has no built-in sample data")
        config.validate()
        spec.sample_data(config)
    config.validate()
    _check_output_outside_data(spec, config)
    if config.name:
        run_path = Path(config.output_dir) / config.name
        if run_path.exists():
            raise TfmedganError(f"run directory {run_path} already exists: pick another --name or use --resume {run_path}")
    return config


def _check_output_outside_data(spec, config: EngineConfig) -> None:
    """Refuse an OUTPUT_DIR inside (or equal to) a data folder: the next run would find its
    generated files among the training data."""
    output = Path(config.output_dir).resolve()
    for slot in spec.positionals:
        if slot.kind != "path" or slot.field == "output_dir":
            continue
        value = getattr(config, slot.field, None)
        for folder in value if isinstance(value, list) else [value]:
            if folder and Path(folder).is_dir():
                data = Path(folder).resolve()
                if output == data or data in output.parents:
                    raise TfmedganError(f"OUTPUT_DIR {config.output_dir} is inside the data folder {folder}: "
                                        "choose an output folder outside the data")


def resume_config(run_dir: str | Path, expected_model: str | None = None,
                  positionals: dict[str, Any] | None = None, **overrides: Any) -> EngineConfig:
    """The stored config of ``run_dir`` with ``overrides`` of the fields a resume may change.

    ``positionals`` (paths given again on the command line) must equal the run's own.
    """
    from tfmedgan.models import get_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TfmedganError(f"--resume {run_dir}: {'not a directory' if run_dir.exists() else 'no such directory'}")
    stored = read_config(run_dir / "config.json")
    spec = get_model(stored.get("model", ""))
    if expected_model is not None and spec.name != expected_model:
        raise TfmedganError(f"--resume {run_dir} is a {spec.name} run, not {expected_model}")
    stored_values = spec.config_from_dict(stored).to_dict()
    if positionals:
        stored_values["output_dir"] = str(run_dir.resolve().parent)
        differing = spec.same_positionals(stored_values, positionals)
        if differing:
            raise TfmedganError(f"--resume {run_dir}: {', '.join(differing)} differ from the run's own "
                                "(give the same paths, or none)")
    if spec.prepare_values is not None:
        overrides = spec.prepare_values(dict(overrides))
    changed = sorted(k for k, v in overrides.items() if k not in RESUMABLE_FIELDS and stored_values.get(k) != v)
    if changed:
        raise TfmedganError(
            f"--resume keeps the run's configuration; cannot change {', '.join(changed)} "
            f"(allowed: {', '.join(sorted(RESUMABLE_FIELDS))})"
        )
    stored_values.update({k: v for k, v in overrides.items() if k in RESUMABLE_FIELDS})
    config = spec.config_from_dict(stored_values)
    config.output_dir = str(run_dir.resolve().parent)
    config.name = run_dir.resolve().name
    return config


def train(model: str | None = None, config: EngineConfig | None = None, *, resume: str | Path | None = None,
          preset: str | None = None, sample_data: bool = False, progress: bool = True, **options: Any) -> "Run":
    """Train a model and return its :class:`Run`.

    Args:
        model: a registered model name (``dcgan``, ``stylegan2``, ``cyclegan3d``, ...); with
            ``resume`` it may be omitted.
        config: a ready config; otherwise one is made from ``preset``, ``sample_data`` and
            ``options`` (config field names, e.g. ``data_dirs=[...]``, ``output_dir="runs"``).
        resume: continue this run directory (``options`` may change only the resumable fields,
            e.g. ``epochs``).
        progress: show the progress bar.
    """
    from tfmedgan.models import get_model

    if resume is not None and config is None:
        config = resume_config(resume, expected_model=model, **options)
    elif config is None:
        if model is None:
            raise TfmedganError("give a model name")
        config = configure(model, preset=preset, sample_data=sample_data, **options)
    spec = get_model(config.model)
    run_dir, summary = spec.train(config, run_dir=resume, progress=progress)
    return Run(run_dir.path, summary=summary)


def load_run(path: str | Path) -> "Run":
    """Open a finished or stopped run directory."""
    return Run(path)


class Run:
    """A run directory and what can be done with its trained networks.

    Attributes:
        path: the run directory.
        config: its config (the model's dataclass).
        spec: its model's :class:`~tfmedgan.models.spec.ModelSpec`.
        summary: the training summary (steps, epochs, seconds) when known.
    """

    def __init__(self, path: str | Path, summary: dict[str, Any] | None = None):
        from tfmedgan.models import get_model

        self.path = Path(path)
        values = read_config(self.path / "config.json")
        self.spec = get_model(values.get("model", ""))
        self.config = self.spec.config_from_dict(values)
        if summary is None and (self.path / "summary.json").is_file():
            import json

            summary = json.loads((self.path / "summary.json").read_text())
        self.summary = summary or {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.spec.name!r})"

    def network(self, name: str, best: bool = False):
        """A trained network (``models/<name>.keras``, or the newest checkpoint's weights)."""
        from tfmedgan.engine.export import load_network

        return load_network(self.path, name, build_recipe=lambda values: self.spec.build_recipe(
            self.spec.config_from_dict(values)), best=best)

    def generate(self, n: int, seed: int = 0, batch: int = 32) -> np.ndarray:
        """``n`` images [n, H, W, C] (about [-1, 1]) from N(0, 1) latents of a 2D GAN run."""
        self._require("images", "generate images")
        from tfmedgan.inference.generate import generate_images

        return generate_images(self.network("generator"), n, seed=seed, batch=batch)

    def translate(self, inputs: str | Path, out_dir: str | Path, direction: str = "A2B",
                  overwrite: bool = False, progress: bool = True, flip_average: bool = False) -> list[Path]:
        """Translate NIfTI files (a file or a folder) with a 3D translation run; writes
        ``<stem>_synthetic.nii.gz`` with each input's affine, header and shape. ``flip_average``
        also translates each volume mirrored left-right and averages the two."""
        self._require("volumes", "translate volumes")
        from tfmedgan.inference.volumes import list_inputs, load_translator, translate_files

        model, shape = load_translator(str(self.path), direction)
        return translate_files(model, shape, list_inputs(inputs), Path(out_dir), overwrite=overwrite, progress=progress,
                               flip_average=flip_average)

    def translate_cases(self, inputs: str | Path, out_dir: str | Path, overwrite: bool = False,
                        progress: bool = True) -> list[Path]:
        """Synthetic T1 of BraTS-layout cases (a case folder or a folder of cases) with a pix2pix3d or
        uda run, written as NIfTI on each case's original grid (affine and shape)."""
        self._require("cases", "translate BraTS cases")
        return self.spec.translate(self.path, inputs, out_dir, overwrite=overwrite, progress=progress)

    def enhance(self, tomogram: str | Path, out_dir: str | Path, **options: Any) -> list[Path]:
        """Enhance a whole tomogram (HDF5 or NIfTI) with a microCT SR run."""
        self._require("tomogram", "enhance tomograms")
        from tfmedgan.inference.tomogram import enhance_file

        return enhance_file(str(self.path), str(tomogram), str(out_dir), **options)

    def _require(self, kind: str, what: str) -> None:
        if self.spec.generates != kind:
            raise TfmedganError(f"{self.path} is a {self.spec.name} run, which cannot {what}")
