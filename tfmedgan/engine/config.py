"""The engine's configuration: options shared by every model, and how a config describes its CLI.

A model's configuration is a dataclass that extends :class:`EngineConfig`. It is the single source
of truth for a run: the CLI and the Python API build one, ``--dry-run`` prints it, the run directory
stores it as ``config.json`` and ``--resume`` reads it back. Every field is a plain JSON value so
the file stays readable and editable.

Each field that the command line exposes is declared with :func:`option`, whose metadata (help,
flags, choices, group) the generic CLI reads; a field declared with a plain default stays out of
the command line.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Sequence, TypeVar

from tfmedgan.errors import TfmedganError

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")

#: Fields that may change when a run is resumed; everything else is fixed by its config.json.
RESUMABLE_FIELDS = frozenset({
    "epochs", "max_steps", "neptune", "checkpoint", "checkpoint_steps", "checkpoint_minutes",
    "keep_checkpoints", "log_every", "strategy", "jit_compile", "validate_every",
})


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flags: Sequence[str] | None = None,
    aliases: Sequence[str] = (),
    choices: Sequence[Any] | None = None,
    group: str | None = None,
    metavar: Any = None,
    negative: str | None = None,
    nargs: int | str | None = None,
    type: Any = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A config field that the command line exposes.

    Args:
        default: the default value (the original authors' value where there is one).
        help: one line for ``--help``; the default is appended.
        flags: the option strings; default ``--field-name``.
        aliases: further option strings for the same field (e.g. a seed's own spelling).
        choices: allowed values.
        group: the ``--help`` section; default the model's own options.
        metavar: argparse metavar (a tuple for list fields).
        negative: for a boolean that defaults to True, the flag that turns it off (e.g.
            ``--unpaired`` for ``supervised``) instead of ``--no-...``.
        nargs, type: for list fields, the number and type of their values (e.g. 3, int).
        default_factory: for list or dict defaults.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class C:
        ...     lr: float = option(2e-4, "Adam learning rate")
    """
    metadata = {"help": help, "flags": tuple(flags or ()), "aliases": tuple(aliases), "choices": choices,
                "group": group, "metavar": metavar, "negative": negative, "nargs": nargs, "type": type, "cli": True}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


ENGINE_GROUP = "training engine"


@dataclasses.dataclass
class EngineConfig:
    """Options of the shared training engine, common to every model (see :func:`option` for help)."""

    output_dir: str = "runs"
    name: str = option("", "run directory name inside OUTPUT_DIR (default: MODEL-TIMESTAMP)", group=ENGINE_GROUP)
    epochs: int = option(1, "number of epochs", group=ENGINE_GROUP)
    batch: int = option(1, "global batch size (split across replicas)", group=ENGINE_GROUP)
    seed: int = option(0, "random seed (Python, NumPy, TensorFlow)", group=ENGINE_GROUP)
    checkpoint: int = option(1, "save a checkpoint and the epoch outputs every N epochs", group=ENGINE_GROUP)
    checkpoint_steps: int = option(0, "also checkpoint every N steps (0: off)", group=ENGINE_GROUP)
    checkpoint_minutes: float = option(10.0, "also checkpoint every N minutes (0: off)", group=ENGINE_GROUP)
    keep_checkpoints: int = option(2, "number of checkpoints kept on disk", group=ENGINE_GROUP)
    precision: str = option("float32", "numerical precision (mixed_bfloat16 is fast on recent CPUs, "
                            "mixed_float16 is for GPUs)", choices=PRECISIONS, group=ENGINE_GROUP)
    strategy: str = option("auto", "tf.distribute strategy (auto: multi-worker with TF_CONFIG, mirrored with "
                           "several GPUs)", choices=STRATEGIES, group=ENGINE_GROUP)
    jit_compile: bool = option(False, "XLA-compile the train step (slow for 3D convolutions on CPU)", group=ENGINE_GROUP)
    neptune: bool = option(False, "log to Neptune (NEPTUNE_PROJECT, NEPTUNE_API_TOKEN, NEPTUNE_MODE)",
                           flags=("-n", "--neptune"), group=ENGINE_GROUP)
    log_every: int = option(1, "write a losses.csv row every N steps", group=ENGINE_GROUP)
    max_steps: int = option(0, "stop after N steps in total (0: no limit)", group=ENGINE_GROUP)
    validate_every: int = option(0, "run the model's validation every N epochs (0: never)", group=ENGINE_GROUP)
    ema: float = option(0.0, "keep an exponential moving average of the generators' weights with this decay "
                        "(e.g. 0.99; 0: off): the exported models, samples and validation use it", group=ENGINE_GROUP)

    model: ClassVar[str] = "base"
    #: Keys of older config.json files and the fields that replaced them.
    renamed_fields: ClassVar[dict[str, str]] = {}
    #: Fields added after runs were made, with the value those older runs trained with: a stored
    #: config.json without the field resumes as it was trained, not with today's default.
    older_run_values: ClassVar[dict[str, Any]] = {}

    def validate(self) -> None:
        """Raise :class:`TfmedganError` for option values that cannot work."""
        if self.precision not in PRECISIONS:
            raise TfmedganError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise TfmedganError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        self.check_at_least(1, "epochs", "batch", "checkpoint", "keep_checkpoints", "log_every")
        if not 0 <= self.seed < 2**31:
            raise TfmedganError(f"--seed must be in [0, 2^31), got {self.seed}")
        self.check_at_least(0, "checkpoint_steps", "max_steps", "validate_every")
        if not 0.0 <= self.ema < 1.0:
            raise TfmedganError(f"--ema must be in [0, 1) (0: off), got {self.ema}")

    def check_at_least(self, minimum: float, *fields: str) -> None:
        """Raise a one-line error naming the first of ``fields`` below ``minimum``."""
        for field in fields:
            value = getattr(self, field)
            if not value >= minimum:
                raise TfmedganError(f"--{field.replace('_', '-')} must be at least {minimum}, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **dataclasses.asdict(self)}

    def to_json(self, path: str | Path) -> None:
        """Write the config as JSON, atomically."""
        path = Path(path)
        temporary = path.with_name(f".tmp-{path.name}")
        temporary.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        temporary.replace(path)


ConfigT = TypeVar("ConfigT", bound=EngineConfig)


def config_from_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
    """Build ``cls`` from a stored dict (a run's config.json), ignoring the ``model`` key and
    rejecting unknown keys; fields missing from an older run take ``cls.older_run_values``."""
    if not isinstance(values, dict):
        raise TfmedganError(f"a {cls.model} config must be a JSON object, got {type(values).__name__}")
    values = dict(values)
    model = values.pop("model", cls.model)
    if model != cls.model:
        raise TfmedganError(f"config is for model {model!r}, not {cls.model!r}")
    for old, new in cls.renamed_fields.items():
        if old in values:
            values.setdefault(new, values.pop(old))
    for field_name, value in cls.older_run_values.items():
        values.setdefault(field_name, value)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TfmedganError(f"unknown config keys for {cls.model}: {', '.join(unknown)}")
    return cls(**values)


def read_config(path: str | Path) -> dict[str, Any]:
    """The JSON object stored in ``path`` (a run's config.json), with one-line errors."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise TfmedganError(f"{path} not found: not a tfmedgan run directory") from None
    except OSError as error:
        raise TfmedganError(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise TfmedganError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise TfmedganError(f"{path} does not hold a JSON object")
    return values
