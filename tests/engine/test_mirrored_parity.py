"""Every registered model trains the same under MirroredStrategy as on one device.

For EVERY entry of :data:`tfmedgan.models.REGISTRY`, two training steps of a tiny configuration on
tiny synthetic data run once on the default (single-device) strategy and once under
MirroredStrategy on the 2 logical CPU devices that ``tests/conftest.py`` makes, from the same
initial weights and the same global batches. The per-step losses and, after the two steps, every
network weight (BN moving statistics included), optimizer variable (Adam moments, iterations) and
recipe state variable (image pools, loss weights, fade-in alpha) must agree within the entry's
stated tolerance (the Adam moments are linear in the summed gradients: a wrong reduction shows
there at full size), and the steps must have moved the trainable weights.
Where the semantics differ by design, the entry states the documented difference and the test
asserts it (see docs/faithfulness.md, "Several devices").

Adam's epsilon is raised to 1e-3 in BOTH runs: Adam divides by sqrt(v), so a gradient that is
mathematically zero (a convolution bias in front of BatchNorm) but 1e-9 of round-off moves its
weight by a full +-lr whose sign is the round-off's; summation order across replicas flips such
signs. With epsilon 1e-3 weight updates are a smooth function of the summed gradients, which is
what distribution changes; the Adam moments (compared too) are linear in them anyway.

A model registered without an entry in :data:`PARITY` fails this test: add a tiny setup below.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmedgan.engine.config import EngineConfig
from tfmedgan.engine.distribute import make_strategy
from tfmedgan.engine.rundir import RunDirectory
from tfmedgan.engine.trainer import Trainer
from tfmedgan.errors import TfmedganError
from tfmedgan.models import REGISTRY, get_model

STEPS = 2


@dataclasses.dataclass(frozen=True)
class Parity:
    """The tiny parity setup of one model (one variant).

    Attributes:
        data: the synthetic data set the config reads (a key of :data:`DATA`).
        config: ``(data path, output folder) -> config`` of a tiny run; its global batch must
            split over 2 replicas and the data must hold at least 2 batches.
        weights_atol, weights_rtol: every variable after the steps satisfies
            ``max |single - mirrored| <= weights_atol + weights_rtol * S``, S the largest |value|
            in its network, optimizer or the recipe state (float32 sums over a batch split in two
            are added in another order; their rounding is relative to the summed terms, whose
            scale is the network's even where they cancel, e.g. the gradient of a convolution
            bias in front of a normalisation; larger for 3D convolutions summing more voxels).
        losses_rtol: relative tolerance of the per-step losses (absolute floor 1e-6).
        patch: ``monkeypatch -> None`` applied before building (test-only switches, e.g. dropout
            off: dropout masks are random per replica, a difference of the random stream only).
        refused: the documented difference of a model that cannot run on several replicas: a
            regular expression of the one-line error that ``prepare_data(2)`` must raise.
        xfail: reason a not-yet-ready model is expected to fail (non-strict).
    """

    data: str
    config: Callable[[Path, Path], EngineConfig]
    weights_atol: float = 1e-7
    weights_rtol: float = 1e-5
    losses_rtol: float = 1e-5
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    refused: str | None = None
    xfail: str | None = None


# -- tiny synthetic data sets (built once per module, only when an entry needs them) -------------
def _slices(folder: Path) -> Path:
    """16 grayscale 32 x 32 PNGs: discs of random centre and radius plus noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:32, :32]
    for index in range(16):
        centre, radius = rng.uniform(10, 22, size=2), rng.uniform(5, 12)
        image = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2) * 180 + rng.integers(0, 40, (32, 32))
        Image.fromarray(image.astype(np.uint8)).save(folder / f"slice_{index:03d}.png")
    return folder


def _nifti_pairs(folder: Path) -> Path:
    from tests.data.test_nifti_pipeline import write_tiny_dataset

    return write_tiny_dataset(folder, n_train=4, n_test=1)


def _phantom(folder: Path) -> Path:
    from tfmedgan.data.samples import write_phantom_dataset

    return write_phantom_dataset(folder, shape=(96, 48, 48), super_resolution=2, seed=0)


def _brats(folder: Path) -> Path:
    from tfmedgan.data.samples.brats import make_brats_cases

    return make_brats_cases(folder / "root", {"train": 4, "val": 1, "test": 1}, voxel_size_mm=8.0, seed=3)


def _brats_4mm(folder: Path) -> Path:
    """Cases at 4 mm: the brain fills most of a 32^3 cube (the VAE's slices are not mostly empty)."""
    from tfmedgan.data.samples.brats import make_brats_cases

    return make_brats_cases(folder / "root", {"train": 1, "val": 0, "test": 0}, voxel_size_mm=4.0, seed=3)


DATA: dict[str, Callable[[Path], object]] = {
    "slices": _slices, "nifti_pairs": _nifti_pairs, "phantom": _phantom, "brats": _brats, "brats_4mm": _brats_4mm,
}


# -- tiny configurations ---------------------------------------------------------------------------
def _engine(out: Path) -> dict:
    return dict(output_dir=str(out), checkpoint_minutes=0, name="parity")


def _dcgan(data, out):
    from tfmedgan.models.dcgan import DCGANConfig

    return DCGANConfig(data_dirs=[str(data)], resolution=32, latent=8, batch=4, dropout=0.0, **_engine(out))


def _stylegan2(loss: str):
    def make(data, out):
        from tfmedgan.models.stylegan2 import StyleGAN2Config

        return StyleGAN2Config(data_dir=str(data), resolution=32, g_input_res=4, g_init_filters=16, d_final_res=4,
                               d_input_filters=8, latent=8, batch=8, fade_in_base=2.0, n_samples=4, loss=loss,
                               **_engine(out))
    return make


def _no_stylegan2_dropout(monkeypatch):
    monkeypatch.setattr("tfmedgan.models.stylegan2.DISCRIMINATOR_DROPOUT", 0.0)


def _cyclegan3d(data, out):
    from tfmedgan.models.cyclegan3d import CycleGAN3DConfig

    # pool 3 < 2 steps x batch 2: the pool fills and swaps; identity update (inside tf.cond) every step
    return CycleGAN3DConfig(data_dir=str(data), base_filters=4, d_filters=4, pool_size=3, batch=2, decay_epoch=0,
                            identity_every=1, **_engine(out))


def _cyclegan_sr(**values):
    def make(data, out):
        from tfmedgan.models.cyclegan_sr import CycleGANSRConfig

        settings = dict(data_a=str(data["fast_json"]), data_b=str(data["slow_json"]), net_a="UNetSim3dSRx2",
                        net_b="UNetSim3dSRd2", super_resolution=2, patch=[12, 12, 12], num_filters=4, d_filters=4,
                        d_layers=2, batch=2, num_iters=4, steps_per_epoch=4, validate_every=0, **_engine(out))
        settings.update(values)
        return CycleGANSRConfig(**settings)
    return make


def _pix2pix3d(data, out):
    from tfmedgan.models.pix2pix_uda.pix2pix3d import Pix2Pix3DConfig

    return Pix2Pix3DConfig(data_root=str(data), crop_shape=[16, 24, 16], filters=4, final_filters=4, d_filters=4,
                           batch=2, augment=False, validate_every=0, epochs=1, epochs_decay=0, **_engine(out))


def _vae2d(data, out):
    from tfmedgan.models.pix2pix_uda.vae2d import VAE2DConfig

    return VAE2DConfig(data_root=str(data), slice_size=32, base_filters=2, batch=16, n_samples=4,
                       **_engine(out))


def _uda(data, out):
    from tfmedgan.models.pix2pix_uda.uda import UDAConfig

    return UDAConfig(data_root=str(data), pretrained=str(out / "no-run"), vae=str(out / "no-vae"), **_engine(out))


#: model -> its variants (id, setup). Every registered model needs at least one entry.
PARITY: dict[str, list[tuple[str, Parity]]] = {
    "dcgan": [("default", Parity("slices", _dcgan))],  # BatchNorm synchronised with several replicas
    "stylegan2": [
        ("bce", Parity("slices", _stylegan2("bce"), patch=_no_stylegan2_dropout)),  # stddev groups all-gathered
        ("wgan-gp", Parity("slices", _stylegan2("wgan-gp"), patch=_no_stylegan2_dropout)),  # GP through the gather
    ],
    # One pool for the global batch. 5e-4: on a CPU without AVX-512 (AMD EPYC, AVX2 only; TF leaves oneDNN off
    # there, Eigen's kernels run) the b2a generator's stem-kernel Adam momentum differs by 3.2e-4 of its group
    # scale after the two steps, though by at most 5.8e-7 (pools, momenta) after the first; on the AMX machines
    # of earlier sessions everything agreed within 1e-4. A wrong reduction differs at the gradients' own scale.
    "cyclegan3d": [("pool", Parity("nifti_pairs", _cyclegan3d, weights_rtol=5e-4))],
    # One variant for both: the clip after the all-reduce, and batch-statistics BatchNorm (synchronised).
    "cyclegan-sr": [("clip-batch-statistics", Parity("phantom", _cyclegan_sr(clip_max=1.0, use_batch_statistics=True),
                                                     weights_rtol=1e-4))],
    # Instance norms: per example. 3e-4: with oneDNN's kernels the generator's Adam momenta differ by
    # up to 1.6e-4 of their group scale (losses to 1e-7) since BlurPool became average pooling;
    # with TF_ENABLE_ONEDNN_OPTS=0 the same code differs by 2.8e-5, and the pool is exact per
    # example (tests/layers/test_blurpool.py): a rounding-order difference of oneDNN's batch-1
    # and batch-2 kernels, not of the distribution.
    "pix2pix3d": [("default", Parity("brats", _pix2pix3d, weights_rtol=3e-4))],
    # Without synchronised BatchNorm the step-0 loss differs by 9.5%. With it (measured by patching the
    # recipe as proposed): 3.7e-4 on these 4 mm cases; Keras' synchronised moments compute
    # var = E[x^2] - E[x]^2, ill-conditioned where slices are mostly empty (8 mm cases: 1.1% at step 1)
    # Synchronised BatchNorm: statistics over the global batch, as on one device.
    "vae2d": [("default", Parity("brats_4mm", _vae2d, losses_rtol=1e-3, weights_rtol=1e-3))],
    "uda": [("one-device", Parity("brats", _uda, refused=r"batch 1 on one device"))],  # documented: batch 1
}


def _cases() -> list:
    cases = []
    for name in REGISTRY:
        for variant, setup in PARITY.get(name, [("no-entry", None)]):
            marks = [pytest.mark.xfail(reason=setup.xfail, strict=False)] if setup and setup.xfail else []
            cases.append(pytest.param(name, setup, id=f"{name}-{variant}", marks=marks))
    return cases


@pytest.fixture(scope="module")
def data_sets(tmp_path_factory):
    made: dict[str, object] = {}

    def get(key: str):
        if key not in made:
            made[key] = DATA[key](tmp_path_factory.mktemp(key) / key)
        return made[key]
    return get


def _state(recipe, trainable_only: bool = False) -> dict[str, np.ndarray]:
    """Every network weight (and optimizer and state variable) by a readable key."""
    values = {f"{name}/{index} {v.name}": np.array(v.numpy()) for name, model in recipe.networks.items()
              for index, v in enumerate(model.weights) if v.trainable or not trainable_only}
    if not trainable_only:
        values.update({f"optimizer.{name}/{index} {v.name}": np.array(v.numpy())
                       for name, optimizer in recipe.optimizers.items() for index, v in enumerate(optimizer.variables)})
        values.update({f"state/{index} {v.name}": np.array(v.numpy()) for index, v in enumerate(recipe.state_variables())})
    return values


@pytest.fixture(autouse=True)
def _adam_epsilon(monkeypatch):
    """Adam with epsilon 1e-3 in both runs (see the module docstring)."""
    original = keras.optimizers.Adam.__init__

    def init(self, *args, **kwargs):
        kwargs["epsilon"] = 1e-3
        original(self, *args, **kwargs)

    monkeypatch.setattr(keras.optimizers.Adam, "__init__", init)


def _train(model: str, setup: Parity, data, out: Path, strategy_name: str, initial: dict | None):
    """Build the model on ``strategy_name`` (from ``initial`` weights when given), run STEPS steps
    on the first global batches of epoch 0; returns (initial weights, per-step losses, final state)."""
    config = setup.config(data, out / strategy_name)
    config.validate()
    spec = get_model(model)
    recipe = spec.build_recipe(config)
    strategy = make_strategy(strategy_name)
    keras.utils.set_random_seed(config.seed)
    recipe.prepare_data(strategy.num_replicas_in_sync)
    assert recipe.steps_per_epoch >= STEPS, "the parity data must hold at least two global batches"
    trainer = Trainer(recipe, RunDirectory.create(config.output_dir, config.name), strategy=strategy, progress=False)
    if initial is not None:
        for name, network in recipe.networks.items():
            network.set_weights(initial[name])
    weights = {name: network.get_weights() for name, network in recipe.networks.items()}
    start = _state(recipe, trainable_only=True)
    recipe.on_epoch_begin(0)
    batches = iter(strategy.experimental_distribute_dataset(recipe.dataset(0)))
    losses = [trainer.train_step(next(batches), step) for step in range(STEPS)]
    state = _state(recipe)
    recipe.close()
    return (weights, start), losses, state


@pytest.mark.parametrize("model, setup", _cases())
def test_two_mirrored_steps_equal_two_single_device_steps(model, setup, data_sets, tmp_path, monkeypatch):
    if setup is None:
        pytest.fail(f"model {model!r} is registered in tfmedgan.models.REGISTRY but has no entry in PARITY of "
                    "tests/engine/test_mirrored_parity.py: add a tiny config (2D 32 px / 3D 16^3) on synthetic data "
                    "and the tolerance of its single-device vs MirroredStrategy comparison")
    assert len(tf.config.list_logical_devices("CPU")) == 2, "tests/conftest.py splits the CPU in two"
    if setup.patch is not None:
        setup.patch(monkeypatch)
    data = data_sets(setup.data)
    if setup.refused is not None:
        config = setup.config(data, tmp_path)
        config.validate()
        with pytest.raises(TfmedganError, match=setup.refused) as error:
            get_model(model).build_recipe(config).prepare_data(2)
        assert "\n" not in str(error.value)
        return

    (initial, start), single_losses, single = _train(model, setup, data, tmp_path, "default", None)
    _, mirrored_losses, mirrored = _train(model, setup, data, tmp_path, "mirrored", initial)

    for step, (expected, got) in enumerate(zip(single_losses, mirrored_losses)):
        assert set(got) == set(expected)
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=setup.losses_rtol, abs=1e-6), (step, key)
    assert single.keys() == mirrored.keys()
    # per variable: max |single - mirrored| <= atol + rtol * (largest |value| of its network / optimizer)
    group_scale: dict[str, float] = {}
    for key, value in single.items():
        if np.issubdtype(value.dtype, np.floating):  # not the optimizers' step counters
            group = key.split("/", 1)[0]
            group_scale[group] = max(group_scale.get(group, 0.0), float(np.max(np.abs(value), initial=0.0)))
    relative = {key: float(np.max(np.abs(single[key] - mirrored[key]), initial=0.0))
                / (setup.weights_atol / setup.weights_rtol + group_scale.get(key.split("/", 1)[0], 0.0)) for key in single}
    worst = max(relative, key=relative.get)
    difference = float(np.max(np.abs(single[worst] - mirrored[worst]), initial=0.0))
    scale = group_scale.get(worst.split("/", 1)[0], 0.0)
    moved = max(float(np.max(np.abs(single[key] - value), initial=0.0)) for key, value in start.items())
    print(f"\n{model}: closest to the tolerance: {worst} differs by {difference:.3g} (group scale {scale:.3g}, "
          f"relative {relative[worst]:.2g}); "
          f"max trainable weight change {moved:.3g}")
    assert relative[worst] <= setup.weights_rtol, (
        f"{worst}: single vs mirrored differ by {difference:.3g} (largest value of its group {scale:.3g})")
    assert moved > 100 * setup.weights_atol, f"the steps moved the trainable weights by only {moved:.3g}"


def test_parity_table_names_only_registered_models():
    stale = sorted(set(PARITY) - set(REGISTRY))
    assert not stale, f"PARITY has entries for unregistered models: {stale}"
    for name, variants in PARITY.items():
        ids = [variant for variant, _ in variants]
        assert variants and len(ids) == len(set(ids)) and all(re.fullmatch(r"[a-z0-9-]+", i) for i in ids), name
