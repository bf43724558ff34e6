"""Unsupervised domain adaptation of the 3D pix2pix with a frozen 2D slice VAE (seed 001, ``fine_tune.py``).

Starts from a pretrained pix2pix3d run (generator and discriminator) and a vae2d run (its
encoder, frozen). Every iteration, on one adaptation sample of
:func:`tfmedgan.data.brats.transfer_dataset` (a source case with T2, FLAIR and T1, and a target
case with T2 and FLAIR only; the target domain's T1 is never read):

1. the supervised pix2pix step on the source case (D update, then G update with LSGAN + 100 x L1
   + 1.5 x feature loss), as in pretraining;
2. a generator-only step on the target case with the loss::

       fake = G(target T2, FLAIR);  real = the source case's T1 (no gradient)
       slices(v): the volume as the VAE's batch of size^3 slices (see common.kl_slices)
       (mu_f, log_sigma_f) = E(slices(fake)),  (mu_r, log_sigma_r) = E(slices(real))
       kl = KL(N(mu_r, exp(log_sigma_r)) || N(mu_f, exp(log_sigma_f)))     per latent element
       loss = mean of kl over the elements above its (100 - ele_percent)-th percentile

Defaults: 5 epochs at a constant 1e-6, ``--ele-percent 55`` (the README's command). The default
KL is the intended one: coronal slices by an axis permutation (the view the VAE was trained
on) and the encoder in inference mode (its BatchNorm moving statistics). ``--faithful-kl`` gives
the original code's: a memory reshape of the volume (scrambled axial planes) and BatchNorm in
training mode (statistics of the current 256-slice batch; the moving statistics drift, as in
the original, and are checkpointed).

The pretrained networks are read from run directories (``models/*.keras`` or the newest
checkpoint) or from exported ``.keras`` files, and rebuilt under the run's ``--precision``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from tfmedgan.data import brats
from tfmedgan.engine.config import ENGINE_GROUP, option
from tfmedgan.engine.precision import apply_gradients, scale_loss
from tfmedgan.errors import TfmedganError
from tfmedgan.models.pix2pix_uda.common import (
    KL_VIEWS, PIX2PIX_MODELS, Pix2PixBase, Pix2PixOptions, build_discriminator, build_generator, elementwise_kl,
    estimate_step_memory, kl_slices, memory_report, sample_brats_root, top_percent_mean, translate_cases,
)
from tfmedgan.models.spec import ModelSpec, Positional
from tfmedgan.networks.vae2d import build_vae_encoder


@dataclasses.dataclass
class UDAConfig(Pix2PixOptions):
    """The adaptation's options; defaults are the README's ``fine_tune.py`` command.

    Attributes:
        pretrained: pix2pix3d (or uda) run directory, a folder with ``generator.keras`` and
            ``discriminator.keras``, or the generator's ``.keras`` file (its discriminator beside it).
        vae: vae2d run directory, a folder with ``vae_encoder.keras``, or that file.
        source: ROOT folder of the source domain (paired T1, T2, FLAIR).
        target: ROOT folder of the target domain (T2 and FLAIR; T1 is never read).
        ele_percent: percentage of latent elements (those with the largest KL) in the loss.
        faithful_kl: the original code's KL: reshaped slices, encoder BatchNorm in training mode.
        kl_view: the slices of the intended KL (``coronal`` or ``transpose``), without ``--faithful-kl``.
        validation: ROOT folder with T1 scored every ``--validate-every`` epochs (empty: none).
        crop_shape: empty = the pretrained run's crop (144 x 192 x 192 for a ``.keras`` file).
    """

    model = "uda"
    pretrained: str = option("", "pretrained pix2pix3d run directory (or its generator .keras file, with "
                             "discriminator.keras beside it)")
    vae: str = option("", "vae2d run directory (or its vae_encoder .keras file)")
    source: str = option("domain1_train", "source folder in ROOT: paired T1, T2, FLAIR", aliases=("--dataset-name-1",))
    target: str = option("domain2_val", "target folder in ROOT: T2 and FLAIR only", aliases=("--dataset-name-2",))
    ele_percent: float = option(55.0, "percentage of latent elements with the largest KL that enter the loss, in (0, 100]")
    faithful_kl: bool = option(False, "the original code's KL: reshaped (scrambled) slices and the encoder's "
                               "BatchNorm in training mode")
    kl_view: str = option("coronal", "slices of the intended KL: coronal (as the VAE was trained) or transpose "
                          "(the same with flipped columns)", choices=("coronal", "transpose"))
    validation: str = option("", "folder in ROOT with T1 to score every --validate-every epochs, e.g. domain2_test "
                             "(monitoring only: it reads target labels)")
    crop_shape: list[int] = option(help="crop D H W (default: the pretrained run's)", nargs=3, type=int,
                                   metavar=("D", "H", "W"), default_factory=list)
    lr: float = option(1e-6, "Adam learning rate of generator and discriminator")
    epochs: int = option(5, "number of epochs", group=ENGINE_GROUP)
    epochs_decay: int = option(0, "the last N epochs decay the learning rate linearly (--n_epochs_decay)")

    def validate(self) -> None:
        super().validate()
        if not self.pretrained:
            raise TfmedganError("give --pretrained RUN: the pix2pix3d run to adapt")
        if not self.vae:
            raise TfmedganError("give --vae RUN: the vae2d run whose encoder measures the KL")
        if not 0.0 < float(self.ele_percent) <= 100.0:
            raise TfmedganError(f"--ele-percent must be in (0, 100], got {self.ele_percent:g}")
        if self.kl_view not in KL_VIEWS[:2]:
            raise TfmedganError(f"--kl-view must be coronal or transpose, got {self.kl_view!r}")
        if self.batch != 1:
            raise TfmedganError(f"uda trains with batch 1 (one source and one target case per step), got --batch {self.batch}")
        for flag, folder in (("--source", self.source), ("--target", self.target)):
            if not folder or "/" in folder:
                raise TfmedganError(f"{flag} must be a folder name in ROOT such as domain1_train, got {folder!r}")


# ------------------------------------------------------------------------------------------------
# Pretrained networks
# ------------------------------------------------------------------------------------------------
def _load_keras(path: Path, flag: str) -> keras.Model:
    from tfmedgan.engine.export import register_custom_layers

    register_custom_layers()
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # unreadable or foreign file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TfmedganError(f"{flag} {path}: cannot load the Keras model ({first[:160]})") from None


def _layer_names(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers}


def _run_model(path: Path) -> str | None:
    from tfmedgan.engine.config import read_config

    if (path / "config.json").is_file():
        return str(read_config(path / "config.json").get("model", ""))
    return None


def _files(path: Path, names: tuple[str, ...], flag: str) -> dict[str, Path]:
    """``.keras`` files of ``names`` from a folder or from a file (its siblings)."""
    if path.is_file():
        if path.suffix != ".keras":
            raise TfmedganError(f"{flag} {path}: not a run directory or a .keras file")
        files = {names[0]: path, **{name: path.with_name(f"{name}.keras") for name in names[1:]}}
    elif path.is_dir():
        files = {name: path / f"{name}.keras" for name in names}
    else:
        raise TfmedganError(f"{flag} {path}: no such run directory or .keras file")
    for name, file in files.items():
        if not file.is_file():
            raise TfmedganError(f"{flag} {path}: {file.name} not found (needs {', '.join(f'{n}.keras' for n in names)})")
    return files


def load_pretrained_pix2pix(path: str | Path) -> tuple[dict[str, keras.Model], Pix2PixOptions | None]:
    """The generator and discriminator of ``--pretrained`` and the run's config (None for files).

    Raises:
        TfmedganError: Missing path, a run of another model, or files that are not a SIT
            generator / conditional PatchGAN.
    """
    from tfmedgan.api import load_run

    path = Path(path)
    model = _run_model(path) if path.is_dir() else None
    if model is not None:
        if model not in PIX2PIX_MODELS:
            raise TfmedganError(f"--pretrained {path} is a {model} run, not a pix2pix3d run")
        run = load_run(path)
        return {name: run.network(name) for name in ("generator", "discriminator")}, run.config
    files = _files(path, ("generator", "discriminator"), "--pretrained")
    return {name: _load_keras(file, "--pretrained") for name, file in files.items()}, None


def load_vae_encoder(path: str | Path) -> keras.Model:
    """The encoder of ``--vae`` (a vae2d run, a folder with ``vae_encoder.keras``, or the file)."""
    from tfmedgan.api import load_run

    path = Path(path)
    model = _run_model(path) if path.is_dir() else None
    if model is not None:
        if model != "vae2d":
            raise TfmedganError(f"--vae {path} is a {model} run, not a vae2d run")
        return load_run(path).network("vae_encoder")
    return _load_keras(_files(path, ("vae_encoder",), "--vae")["vae_encoder"], "--vae")


def generator_architecture(model: keras.Model, flag: str = "--pretrained") -> dict[str, int]:
    """Builder arguments of a loaded SIT generator (one-line error for anything else)."""
    names = _layer_names(model)
    if not {"layers_in_0_conv", "layers_0_up", "out_conv"} <= names:
        raise TfmedganError(f"{flag}: {model.name} is not a SIT generator (a pix2pix3d run's generator)")
    return {"filters": int(model.get_layer("layers_in_0_conv").filters),
            "final_filters": int(model.get_layer("layers_0_up").filters),
            "factor": 1 + sum(bool(re.fullmatch(r"layers_in_\d+_conv", name)) for name in names),
            "input_channels": int(model.inputs[0].shape[-1]),
            "upsample": "resize" if "layers_0_up_resize" in names else "transposed",
            "input_skip": "out_input_skip" in names}


def discriminator_architecture(model: keras.Model, flag: str = "--pretrained") -> dict[str, Any]:
    """Builder arguments of a loaded conditional PatchGAN."""
    names = _layer_names(model)
    convs = sorted(int(match.group(1)) for name in names if (match := re.fullmatch(r"model_(\d+)_conv", name)))
    if len(model.inputs) != 2 or len(convs) < 4:
        raise TfmedganError(f"{flag}: {model.name} is not a conditional PatchGAN (a pix2pix3d run's discriminator)")
    inner = [model.get_layer(f"model_{index}_conv") for index in convs[1:-1]]
    return {"base_filters": int(model.get_layer("model_0_conv").filters), "n_layers": len(convs) - 3,
            "antialias": any(name.endswith("_blurpool") for name in names),
            "inner_bias": bool(inner[0].use_bias), "input_channels": int(model.inputs[0].shape[-1])}


def encoder_architecture(model: keras.Model, flag: str = "--vae") -> dict[str, int]:
    """Builder arguments of a loaded slice-VAE encoder (static slice size)."""
    names = _layer_names(model)
    if not {"conv1_conv", "res2_stdev_sum"} <= names or len(model.outputs) != 2:
        raise TfmedganError(f"{flag}: {model.name} is not a slice-VAE encoder (a vae2d run's vae_encoder)")
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise TfmedganError(f"{flag}: the encoder's input {tuple(shape)} is not a fixed square slice")
    return {"size": int(shape[1]), "base_filters": int(model.get_layer("conv1_conv").filters),
            "depth": sum(bool(re.fullmatch(r"res\d+_sum", name)) for name in names)}


def _set_weights(model: keras.Model, weights: list[np.ndarray], flag: str) -> None:
    try:
        model.set_weights(weights)
    except ValueError as error:
        raise TfmedganError(f"{flag}: the stored weights do not fit the rebuilt {model.name} ({error})") from None


# ------------------------------------------------------------------------------------------------
# Recipe
# ------------------------------------------------------------------------------------------------
class UDARecipe(Pix2PixBase):
    """Seed 001 adaptation: supervised source step + KL generator step on a target case."""

    config: UDAConfig

    def load_sources(self) -> None:
        """Read ``--pretrained`` and ``--vae`` (once), check them and resolve the crop."""
        if hasattr(self, "_sources"):
            return
        config = self.config
        networks, pretrained_config = load_pretrained_pix2pix(config.pretrained)
        encoder = load_vae_encoder(config.vae)
        self._sources = {
            "generator": (generator_architecture(networks["generator"]), networks["generator"].get_weights()),
            "discriminator": (discriminator_architecture(networks["discriminator"]),
                              networks["discriminator"].get_weights()),
            "vae_encoder": (encoder_architecture(encoder), encoder.get_weights()),
        }
        if not config.crop_shape:
            if pretrained_config is not None:
                config.crop_shape = list(pretrained_config.crop_shape)
                config.crop_start = list(pretrained_config.crop_start)
            else:
                config.crop_shape = list(brats.ORIGINAL_CROP_SHAPE)
        config.pretrained = str(Path(config.pretrained).resolve())
        config.vae = str(Path(config.vae).resolve())

    @property
    def slice_size(self) -> int:
        return int(self._sources["vae_encoder"][0]["size"])

    # -- data ------------------------------------------------------------------------------------
    def prepare_data(self, num_replicas: int = 1) -> None:
        config = self.config
        if not config.data_root:
            raise TfmedganError("no data folder given: ROOT must hold the --source and --target folders "
                                "(or use --sample-data)")
        if num_replicas > 1:
            raise TfmedganError(f"uda trains with batch 1 on one device, not on {num_replicas} replicas")
        root = Path(config.data_root)
        if not root.is_dir():
            raise TfmedganError(f"{root}: data folder does not exist")
        self.load_sources()
        crop_shape, crop_start = config.crop()
        self.source_cases = brats.list_cases(root / config.source, brats.MODALITIES)
        self.target_cases = brats.list_cases(root / config.target, brats.INPUT_MODALITIES)
        brats.validate_cases(self.source_cases, brats.MODALITIES, crop_shape, crop_start)
        brats.validate_cases(self.target_cases, brats.INPUT_MODALITIES, crop_shape, crop_start)
        if config.validation:
            self.validation_cases = brats.list_cases(root / config.validation, brats.MODALITIES)
            brats.validate_cases(self.validation_cases, brats.MODALITIES, crop_shape, crop_start, progress=False)
        self.figure_case = self.target_cases[0]
        self.steps_per_epoch = brats.transfer_length(self.source_cases, self.target_cases)

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        config = self.config
        crop_shape, crop_start = config.crop()
        return brats.transfer_dataset(self.source_cases, self.target_cases, crop_shape, crop_start, seed=config.seed,
                                      epoch=epoch, augment=config.augment, skip=skip_batches)

    # -- networks --------------------------------------------------------------------------------
    def build_networks_only(self) -> None:
        self.load_sources()
        sources = self._sources
        generator = build_generator(**sources["generator"][0])
        discriminator = build_discriminator(**sources["discriminator"][0])
        encoder_args = sources["vae_encoder"][0]
        size = encoder_args["size"]
        encoder = build_vae_encoder((size, size, 1), encoder_args["base_filters"], encoder_args["depth"],
                                    name="vae_encoder")
        for model, name, flag in ((generator, "generator", "--pretrained"), (discriminator, "discriminator", "--pretrained"),
                                  (encoder, "vae_encoder", "--vae")):
            _set_weights(model, sources[name][1], flag)
        self.networks = {"generator": generator, "discriminator": discriminator, "vae_encoder": encoder}

    def build(self, num_replicas: int = 1) -> None:
        self.build_networks_only()
        self.optimizers = self.make_optimizers()

    # -- training --------------------------------------------------------------------------------
    def kl_step(self, target_inputs: tf.Tensor, source_target: tf.Tensor) -> tf.Tensor:
        """The generator-only KL update on a target case (see the module docstring)."""
        config = self.config
        generator, encoder = self.networks["generator"], self.networks["vae_encoder"]
        optimizer = self.optimizers["generator"]
        view = "reshape" if config.faithful_kl else config.kl_view
        batch_statistics = bool(config.faithful_kl)
        size = self.slice_size
        forward = self.generator_call()
        encode = self.encoder_call()
        with tf.GradientTape() as tape:
            fake = forward(target_inputs)
            # Order (a data dependency each): the real posterior is computed once the generator's
            # fake exists, i.e. after the supervised step's updates, and the fake slices are
            # encoded after it, so the real pass cannot run alongside the supervised step or the
            # fake pass (the measured peak of the whole step: docs/pix2pix_uda.md, "Memory").
            with tape.stop_recording(), tf.control_dependencies([fake]):
                mu_real, log_sigma_real = encoder(kl_slices(tf.stop_gradient(source_target), size, view),
                                                  training=batch_statistics)
            with tf.control_dependencies([mu_real, log_sigma_real]):
                fake_slices = kl_slices(fake, size, view)
            mu_fake, log_sigma_fake = encode(fake_slices)
            kl = elementwise_kl(tf.stop_gradient(mu_real), tf.stop_gradient(log_sigma_real), mu_fake, log_sigma_fake)
            loss = top_percent_mean(kl, config.ele_percent)
            scaled = scale_loss(optimizer, loss)
        apply_gradients(optimizer, tape, scaled, generator.trainable_variables)
        return loss

    def encoder_call(self) -> Callable[[tf.Tensor], list[tf.Tensor]]:
        """The frozen encoder on the fake slices; with ``--recompute`` (and the encoder in inference
        mode) its activations are recomputed in the backward pass instead of being kept. With
        ``--faithful-kl`` (train-mode BatchNorm) it is never recomputed: the recomputation would
        update the moving statistics a second time."""
        if not hasattr(self, "_encoder_call"):
            encoder = self.networks["vae_encoder"]
            training = bool(self.config.faithful_kl)

            def call(slices):
                return list(encoder(slices, training=training))

            self._encoder_call = tf.recompute_grad(call) if self.config.recompute and not training else call
        return self._encoder_call

    def train_step(self, batch: Any, step: tf.Tensor) -> dict[str, tf.Tensor]:
        source_inputs, source_target, target_inputs = batch
        losses = self.supervised_step(source_inputs, source_target)
        losses["kl"] = self.kl_step(target_inputs, source_target)
        return losses

    # -- dry run ---------------------------------------------------------------------------------
    def dry_run_extra(self) -> dict[str, Any]:
        config = self.config
        generator_args = self._sources["generator"][0]
        shape = config.model_shape()
        estimate = estimate_step_memory(generator_args["filters"], generator_args["final_filters"],
                                        self._sources["discriminator"][0]["base_filters"], shape, config.recompute,
                                        vae=self._sources["vae_encoder"][0], precision=config.precision)
        return {"model_shape": list(shape), "vae_slice_size": self.slice_size, **memory_report(estimate)}


MODEL = ModelSpec(
    name="uda",
    config_class=UDAConfig,
    recipe="tfmedgan.models.pix2pix_uda.uda:UDARecipe",
    help="adapt a pix2pix3d run to a new domain with a frozen 2D slice VAE, unsupervised (seed 001)",
    description="Fine-tune a pretrained pix2pix3d run (--pretrained) on ROOT/<source> (supervised) and "
    "ROOT/<target> (T2 and FLAIR only): per iteration a supervised source step, then a generator step minimising "
    "the mean of the top --ele-percent element-wise KL(q_real || q_fake) between the slice posteriors of the frozen "
    "vae2d encoder (--vae) for a real source T1 and the synthetic target T1. --faithful-kl reproduces the original "
    "code's reshaped slices and train-mode BatchNorm. With --sample-data only OUTPUT_DIR is given.",
    positionals=(Positional("data_root", "ROOT", sample_data=True), Positional("output_dir", "OUTPUT_DIR")),
    sample_data=sample_brats_root,
    generates="cases",
    translate=translate_cases,
)


def train(config: UDAConfig, run_dir: str | None = None, **kwargs):
    """Adapt a pix2pix3d run from ``config``; ``run_dir`` resumes an existing run."""
    return MODEL.train(config, run_dir=run_dir, **kwargs)
