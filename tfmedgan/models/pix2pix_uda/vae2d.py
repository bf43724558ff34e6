"""2D slice VAE on source-domain T1 volumes (seed 001, ``main_experiment_256.py``).

ResBlock encoder and decoder (:mod:`tfmedgan.networks.vae2d`, ``gf_dim`` 4, spatial latent
256 x 2 x 2; 1,726,296 / 1,576,165 trainable parameters, PyTorch's count). The slices are made
on the fly from the volumes (:func:`tfmedgan.data.brats.vae_slice_dataset`), with no JPEG step
on disk: each T1 volume of ``ROOT/<dataset_name>_train`` in its native orientation is centre
cropped / zero padded to 256^3, scaled by its 1st/99th percentiles to [0, 1] and cut into 256
slices along axis 1 (coronal for BraTS files). One batch is one volume's 256 ordered slices
(``--batch`` may lower it; a batch never mixes volumes), so BatchNorm statistics are per volume.

One step::

    mu, log_sigma = E(x)                    (BatchNorm in training mode)
    z = mu + eps * exp(log_sigma)           (eps from (seed, step))
    loss = sum((D(z) - x)^2) + kl_weight * -0.5 sum(1 + 2 log_sigma - mu^2 - exp(2 log_sigma))

Adam 1e-4 (0.9, 0.999, epsilon 1e-8). The sample grid shows fixed input slices beside their
reconstructions ``D(mu)`` (inference mode).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import tensorflow as tf

from tfmedgan.data import brats
from tfmedgan.engine.config import ENGINE_GROUP, EngineConfig, option
from tfmedgan.engine.distribute import global_batch_size, replica_slice
from tfmedgan.engine.precision import apply_gradients, scale_loss
from tfmedgan.engine.recipe import Recipe
from tfmedgan.errors import TfmedganError
from tfmedgan.models.pix2pix_uda.common import make_adam, sample_brats_root
from tfmedgan.models.spec import ModelSpec, Positional
from tfmedgan.networks.vae2d import build_vae_decoder, build_vae_encoder, kl_to_standard_normal, latent_shape, pytorch_parameter_count

_SALT_NOISE = 31


@dataclasses.dataclass
class VAE2DConfig(EngineConfig):
    """The slice VAE's options; defaults are the original script's values.

    Attributes:
        data_root: BraTS-layout root; the T1 volumes of ``<dataset_name>_train`` are used.
        dataset_name: the source domain (``domain1``).
        slice_size: cube edge and slice size (256); the encoder halves it ``log2(size) - 1``
            times, so the latent is always 2 x 2.
        base_filters: ``gf_dim`` (4).
        kl_weight: weight of the KL term (``--kl-latent-loss-weight`` 0.01).
        quantize: round the slices down to multiples of 1/255 as the original's uint8 JPEGs.
        shuffle: shuffle the volume order per epoch (the original kept a fixed order).
        n_samples: slices in the sample grid.
    """

    model = "vae2d"
    data_root: str = ""
    dataset_name: str = option("domain1", "train on the T1 volumes of ROOT/<name>_train")
    slice_size: int = option(256, "cube edge and slice size, a power of 2 (the latent is 2 x 2)")
    base_filters: int = option(4, "encoder/decoder width (the original gf_dim)")
    kl_weight: float = option(0.01, "weight of the KL term (--kl-latent-loss-weight)")
    lr: float = option(1e-4, "Adam learning rate")
    batch: int = option(256, "slices per batch, at most --slice-size (one volume; the default with a smaller "
                        "--slice-size); a batch never mixes volumes",
                        group=ENGINE_GROUP)
    epochs: int = option(300, "number of epochs", group=ENGINE_GROUP)
    seed: int = option(42, "random seed", group=ENGINE_GROUP)
    quantize: bool = option(False, "round slices down to 1/255 steps like the original's uint8 JPEG slices")
    shuffle: bool = option(False, "shuffle the volume order every epoch (the original: fixed order)")
    n_samples: int = option(8, "slices shown (beside their reconstructions) in the sample grid")

    def validate(self) -> None:
        super().validate()
        size = int(self.slice_size)
        if size < 8 or size & (size - 1):
            raise TfmedganError(f"--slice-size must be a power of 2 of at least 8, got {self.slice_size}")
        if self.batch > size:
            raise TfmedganError(f"--batch {self.batch} is larger than one volume's {size} slices (--slice-size); "
                                f"use --batch {size} or less")
        self.check_at_least(1, "base_filters", "n_samples")
        self.check_at_least(0, "kl_weight", "lr")

    @property
    def depth(self) -> int:
        """Encoder halvings: ``log2(slice_size) - 1`` (7 for 256)."""
        return int(round(math.log2(int(self.slice_size)))) - 1


class VAE2DRecipe(Recipe):
    """Seed 001 slice VAE: encoder + decoder trained jointly, one volume per batch."""

    config: VAE2DConfig

    # -- data ------------------------------------------------------------------------------------
    def prepare_data(self, num_replicas: int = 1) -> None:
        config = self.config
        if not config.data_root:
            raise TfmedganError("no data folder given: ROOT must hold <dataset-name>_train (or use --sample-data)")
        cases = brats.list_split(config.data_root, config.dataset_name, "train", ("t1",))
        brats.validate_cases(cases, ("t1",), crop_shape=None)
        self.files = [case.path("t1") for case in cases]
        if num_replicas > 1 and config.batch % num_replicas:
            raise TfmedganError(f"--batch {config.batch} is not divisible by the {num_replicas} replicas")
        if num_replicas > 1 and config.slice_size % config.batch:
            raise TfmedganError(f"with {num_replicas} replicas --batch must divide --slice-size {config.slice_size}")
        self.steps_per_epoch = len(self.files) * math.ceil(config.slice_size / config.batch)

    def dataset(self, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        config = self.config
        return brats.vae_slice_dataset(self.files, size=config.slice_size, batch=config.batch, seed=config.seed,
                                       epoch=epoch, shuffle=config.shuffle, quantize=config.quantize, skip=skip_batches)

    # -- networks --------------------------------------------------------------------------------
    def build_networks_only(self) -> None:
        config = self.config
        size, depth = int(config.slice_size), config.depth
        # On several replicas BatchNorm takes its statistics over the global batch, as on one device.
        synchronized = getattr(self, "num_replicas", 1) > 1
        self.networks = {
            "vae_encoder": build_vae_encoder((size, size, 1), config.base_filters, depth,
                                             synchronized_batchnorm=synchronized),
            "vae_decoder": build_vae_decoder(latent_shape((size, size), config.base_filters, depth), 1,
                                             config.base_filters, depth, synchronized_batchnorm=synchronized),
        }

    def build(self, num_replicas: int = 1) -> None:
        self.num_replicas = num_replicas
        self.build_networks_only()
        self.optimizers = {"vae": make_adam(self.config.lr, 0.9, 0.999, self.config.precision)}

    def optimizer_variables(self) -> dict[str, list]:
        return {"vae": self.networks["vae_encoder"].trainable_variables + self.networks["vae_decoder"].trainable_variables}

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters (PyTorch's ``parameters()``: 1,726,296 and 1,576,165 at 256)."""
        return {name: pytorch_parameter_count(model) for name, model in self.networks.items()}

    # -- training --------------------------------------------------------------------------------
    def train_step(self, batch: tf.Tensor, step: tf.Tensor) -> dict[str, tf.Tensor]:
        encoder, decoder = self.networks["vae_encoder"], self.networks["vae_decoder"]
        optimizer = self.optimizers["vae"]
        variables = encoder.trainable_variables + decoder.trainable_variables
        slices = tf.cast(batch, tf.float32)
        total = global_batch_size(tf.shape(slices)[0])
        with tf.GradientTape() as tape:
            mu, log_sigma = encoder(slices, training=True)
            latent = tf.shape(mu)[1:]
            noise = replica_slice(tf.random.stateless_normal(tf.concat([[total], latent], 0),
                                                             seed=self.noise_seed(step, _SALT_NOISE)))
            z = mu + noise * tf.exp(log_sigma)
            reconstruction = tf.cast(decoder(z, training=True), tf.float32)
            sse = tf.reduce_sum(tf.square(reconstruction - slices))
            kl = kl_to_standard_normal(mu, log_sigma)
            loss = sse + self.config.kl_weight * kl
            scaled = scale_loss(optimizer, loss)
        apply_gradients(optimizer, tape, scaled, variables)
        return {"loss": loss, "sse": sse, "kl": kl}

    # -- outputs ---------------------------------------------------------------------------------
    def sample_slices(self) -> np.ndarray:
        """``n_samples`` fixed slices of the first volume, evenly spread over its non-empty slices."""
        if not hasattr(self, "_samples"):
            from tfmedgan.io.nifti import read_volume

            config = self.config
            slices = brats.volume_to_slices(read_volume(self.files[0]).data, config.slice_size, quantize=config.quantize)
            filled = np.flatnonzero(slices.reshape(len(slices), -1).max(axis=1) > 0)
            low, high = (filled[0], filled[-1]) if filled.size else (0, len(slices) - 1)
            picks = np.linspace(low, high, config.n_samples + 2)[1:-1].round().astype(int)
            self._samples = slices[picks]
        return self._samples

    def sample_images(self) -> np.ndarray | None:
        """Each input slice beside its reconstruction ``D(mu)`` (inference mode), in [-1, 1]."""
        if not hasattr(self, "files"):
            return None
        slices = self.sample_slices()
        mu, _ = self.networks["vae_encoder"](tf.constant(slices), training=False)
        reconstruction = np.asarray(self.networks["vae_decoder"](mu, training=False), np.float32)
        pairs = np.concatenate([slices, np.clip(reconstruction, 0.0, 1.0)], axis=2)
        return pairs * 2.0 - 1.0

    # -- dry run ---------------------------------------------------------------------------------
    def dry_run_extra(self) -> dict[str, Any]:
        from tfmedgan.engine.memory import largest_activation_elements, saved_activation_bytes

        config = self.config
        counts = {name: int(model.count_params()) for name, model in self.networks.items()}
        saved = sum(saved_activation_bytes(model) for model in self.networks.values())
        largest = max(largest_activation_elements(model) for model in self.networks.values())
        weights = 16.0 * sum(pytorch_parameter_count(model) for model in self.networks.values())
        activations = config.batch * (saved + 3.0 * 4 * largest)
        data = 3.0 * config.slice_size**3 * 4
        total = weights + activations + data + 2**30
        return {
            "parameters_keras_count_params": counts,
            "parameters_note": "parameters = trainable weights (PyTorch's parameters()); Keras count_params() "
                               "adds the BatchNorm moving mean and variance",
            "memory_estimate_gib": round(total / 2**30, 3),
            "memory_estimate_parts_gib": {"weights": round(weights / 2**30, 3), "data": round(data / 2**30, 3),
                                          "activations": round(activations / 2**30, 3), "runtime": 1.0},
        }


def _prepare_values(values: dict[str, Any]) -> dict[str, Any]:
    """A ``--slice-size`` below 256 without ``--batch``: one volume (``slice_size`` slices) per batch."""
    if "slice_size" in values and "batch" not in values and int(values["slice_size"]) < 256:
        values = {**values, "batch": int(values["slice_size"])}
    return values


def _sample_data(config: VAE2DConfig) -> None:
    sample_brats_root(config)
    if config.batch > config.slice_size:
        config.batch = config.slice_size


MODEL = ModelSpec(
    name="vae2d",
    config_class=VAE2DConfig,
    recipe="tfmedgan.models.pix2pix_uda.vae2d:VAE2DRecipe",
    help="2D slice VAE on source-domain T1 volumes, for the adaptation's KL term (seed 001)",
    description="Train the ResBlock slice VAE on the T1 volumes of ROOT/<dataset-name>_train: each volume is padded "
    "to 256^3, scaled by its 1st/99th percentiles and cut into 256 coronal slices on the fly (no JPEG files); one "
    "volume per batch. With --sample-data only OUTPUT_DIR is given (simulated cases in "
    "OUTPUT_DIR/sample_data-brats-4mm, 64 x 64 slices).",
    positionals=(Positional("data_root", "ROOT", sample_data=True), Positional("output_dir", "OUTPUT_DIR")),
    sample_data=_sample_data,
    prepare_values=_prepare_values,
)


def train(config: VAE2DConfig, run_dir: str | None = None, **kwargs):
    """Train the slice VAE from ``config``; ``run_dir`` resumes an existing run."""
    return MODEL.train(config, run_dir=run_dir, **kwargs)
