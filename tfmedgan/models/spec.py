"""What a model declares to the rest of the package: a :class:`ModelSpec`.

Each model module defines one ``MODEL = ModelSpec(...)``; :mod:`tfmedgan.models` lists the
modules, and the command line, the Python API, ``--resume`` and ``generate_images/generate.py``
find everything they need about a model here:

* its config dataclass (options, defaults, help in field metadata) and presets;
* its positional arguments (as the original CLI had them);
* its recipe class, built from a config;
* how to fill its data fields with built-in sample data (``--sample-data``);
* what a finished run generates (``images`` from latents, ``volumes`` translated, or ``tomogram``
  enhancement);
* extra command-line arguments and subcommands (e.g. ``--evaluate``, ``dcgan-ssim``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from tfmedgan.engine.config import EngineConfig, config_from_dict
from tfmedgan.errors import TfmedganError


@dataclasses.dataclass(frozen=True)
class Positional:
    """One positional command-line argument, stored in a config field.

    Args:
        field: the config field.
        metavar: its name in ``--help`` (default: the field name in capitals).
        variadic: takes one or more values (a list field), e.g. several data folders.
        kind: ``path`` (compared as resolved paths on ``--resume``), ``int`` or ``float``.
        sample_data: filled by ``--sample-data`` instead of the command line.
        optional_with_preset: may be left out when ``--preset`` gives it.
    """

    field: str
    metavar: str = ""
    variadic: bool = False
    kind: str = "path"
    sample_data: bool = False
    optional_with_preset: bool = False

    @property
    def name(self) -> str:
        return self.metavar or self.field.upper()

    def convert(self, text: str) -> Any:
        if self.kind == "path":
            return str(text)
        try:
            return int(text) if self.kind == "int" else float(text)
        except ValueError:
            raise TfmedganError(f"{self.name} must be a number, got {text!r}") from None


@dataclasses.dataclass(frozen=True)
class Command:
    """A further subcommand of a model (evaluation, test, export ...).

    Args:
        name: subcommand name, e.g. ``dcgan-ssim``.
        help: one line for the subcommand list.
        add_arguments: adds its arguments to an ``argparse`` parser.
        run: runs it from the parsed arguments; returns the exit status.
        description: longer ``--help`` text.
    """

    name: str
    help: str
    add_arguments: Callable[[Any], None]
    run: Callable[[Any], int]
    description: str = ""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the package needs to know about one model (see the module docstring).

    Args:
        name: the subcommand and ``config.json`` model name.
        config_class: its config dataclass (extends :class:`EngineConfig`).
        recipe: ``"module:Class"`` of its recipe (imported when first needed).
        help: one line naming the model by what it is.
        description: ``--help`` text.
        positionals: the positional arguments, in order.
        presets: name -> option values; explicit options win over a preset.
        sample_data: fills the data fields of a new config with built-in data.
        generates: ``images`` (latents -> 2D images), ``volumes`` (NIfTI translation),
            ``tomogram`` (HDF5/NIfTI enhancement) or ``cases`` (BraTS-layout cases), for
            ``generate_images/generate.py``.
        translate: for ``cases``: ``(run_dir, inputs, out_dir, overwrite=, progress=) -> paths``,
            the function that writes a run's outputs (``generate.py``, ``Run.translate_cases``).
        add_arguments: extra, non-config arguments of the training subcommand.
        before_training: called with the parsed arguments before training; returns an exit
            status to stop there (e.g. ``--resume RUN --evaluate`` only evaluates).
        after_training: called with the parsed arguments and the run directory path.
        prepare_values: turns explicit option values into config values (e.g. reads a JSON file).
        commands: further subcommands.
    """

    name: str
    config_class: type[EngineConfig]
    recipe: str
    help: str
    description: str = ""
    positionals: tuple[Positional, ...] = ()
    presets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    sample_data: Callable[[EngineConfig], None] | None = None
    generates: str = ""
    translate: Callable[..., list[Path]] | None = None
    add_arguments: Callable[[Any], None] | None = None
    before_training: Callable[[Any], int | None] | None = None
    after_training: Callable[[Any, Path], int] | None = None
    prepare_values: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    commands: tuple[Command, ...] = ()

    # -- configs ---------------------------------------------------------------------------------
    def config(self, preset: str | None = None, **values: Any) -> EngineConfig:
        """A new config from the defaults, a preset and ``values`` (which win)."""
        if preset is not None:
            if preset not in self.presets:
                raise TfmedganError(f"{self.name} has no preset {preset!r} (presets: {', '.join(self.presets) or 'none'})")
            values = {**self.presets[preset], **values}
            if "preset" in {f.name for f in dataclasses.fields(self.config_class)}:
                values["preset"] = preset
        if self.prepare_values is not None:
            values = self.prepare_values(values)
        fields = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise TfmedganError(f"unknown {self.name} options: {', '.join(unknown)}")
        return self.config_class(**values)

    def config_from_dict(self, values: dict[str, Any]) -> EngineConfig:
        return config_from_dict(self.config_class, values)

    def recipe_class(self) -> type:
        import importlib

        module, attribute = self.recipe.split(":")
        return getattr(importlib.import_module(module), attribute)

    def build_recipe(self, config: EngineConfig):
        return self.recipe_class()(config)

    # -- training --------------------------------------------------------------------------------
    def train(self, config: EngineConfig, run_dir: str | Path | None = None, progress: bool = True,
              stop_after_steps: int | None = None):
        """Train ``config`` in a new run directory, or continue ``run_dir``; returns
        ``(RunDirectory, summary)``."""
        from tfmedgan.engine.launch import launch

        return launch(self.build_recipe(config), resume=None if run_dir is None else str(run_dir),
                      progress=progress, stop_after_steps=stop_after_steps)

    def dry_run(self, config: EngineConfig) -> dict[str, Any]:
        from tfmedgan.engine.launch import dry_run

        return dry_run(self.build_recipe(config))

    def parse_positionals(self, paths: Sequence[str], sample_data: bool, preset: bool) -> dict[str, Any]:
        """Config values from the positional arguments of the command line."""
        slots = [p for p in self.positionals if not (sample_data and p.sample_data)]
        required = [p for p in slots if not (preset and p.optional_with_preset)]
        variadic = [p for p in slots if p.variadic]
        counts = {len(required), len(slots)} if not variadic else set()
        fits = (len(paths) >= len(slots)) if variadic else (len(paths) in counts)
        if not fits:
            usage = " ".join(f"{p.name} [{p.name} ...]" if p.variadic else p.name for p in slots)
            hint = ""
            if not preset and any(p.optional_with_preset for p in slots):
                hint += f" (or {' '.join(p.name for p in slots if not p.optional_with_preset)} with --preset)"
            if self.sample_data is not None and not sample_data:
                hint += " (with --sample-data, leave out the data)"
            raise TfmedganError(f"give {usage}{hint}")
        values: dict[str, Any] = {}
        extra = len(paths) - len(slots) if variadic else 0
        index = 0
        for slot in slots:
            if index >= len(paths):
                break
            if slot.variadic:
                values[slot.field] = [slot.convert(p) for p in paths[index : index + extra + 1]]
                index += extra + 1
            else:
                values[slot.field] = slot.convert(paths[index])
                index += 1
        return values

    def same_positionals(self, stored: dict[str, Any], given: dict[str, Any]) -> list[str]:
        """Names of given positional values that differ from the run's own (paths compared resolved)."""
        def normal(slot: Positional, value: Any) -> Any:
            if slot.kind != "path":
                return value
            if isinstance(value, list):
                return [str(Path(v).resolve()) for v in value]
            return str(Path(value).resolve())

        differing = []
        for slot in self.positionals:
            if slot.field in given and normal(slot, given[slot.field]) != normal(slot, stored.get(slot.field)):
                differing.append(slot.name)
        return differing
