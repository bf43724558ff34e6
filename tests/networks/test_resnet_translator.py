"""Tests for the seed-000 ResNet generator and its valid-shape helpers."""

import keras
import numpy as np
import pytest

from tfmedgan.errors import TfmedganError
from tfmedgan.layers import InstanceNormalization
from tfmedgan.networks.resnet_translator import (
    GENERATOR_PRESETS,
    build_preset_generator,
    build_resnet_generator,
    centre_padding,
    crop_padding,
    is_valid_spatial_size,
    minimum_spatial_size,
    pad_to_valid,
    required_multiple,
    valid_input_shape,
)

ORIGINAL_SHAPE = (156, 188, 156, 1)


def _norm_lengths(model):
    return [
        int(layer.gamma.shape[0])
        for layer in model.layers
        if isinstance(layer, InstanceNormalization)
    ]


def test_parameter_counts_match_spec():
    # spec A2: 355,077 for the shipped (per-Z-slice norm) generator; per-channel IN replaces
    # 2 * (156 + 78 + 78 + 78 + 156) norm weights by 2 * (32 + 64 + 64 + 64 + 32).
    channel = build_resnet_generator(ORIGINAL_SHAPE, norm="channel")
    zslice = build_resnet_generator(ORIGINAL_SHAPE, norm="zslice")
    assert channel.count_params() == 354_497
    assert zslice.count_params() == 355_077
    assert _norm_lengths(zslice) == [156, 78, 78, 78, 156]
    assert _norm_lengths(channel) == [32, 64, 64, 64, 32]
    assert build_preset_generator("cyclegan_3d").count_params() == 355_077


def test_gan_3d_preset_parameter_count():
    # GAN_3D.py: c7 64, d128, d256, 8 x R256, u128, u64, c7 1 (spec A2.4), hand-counted:
    convs = (
        (343 * 64 + 64)
        + (27 * 64 * 128 + 128)
        + (27 * 128 * 256 + 256)
        + 16 * (27 * 256 * 256 + 256)
        + (27 * 256 * 128 + 128)
        + (27 * 128 * 64 + 64)
        + (343 * 64 + 1)
    )
    channel_norm = 2 * (64 + 128 + 256 + 16 * 256 + 128 + 64)
    zslice_norm = 2 * (84 + 42 + 21 + 16 * 21 + 42 + 84)  # Z = 84 at (92, 108, 84)
    assert GENERATOR_PRESETS["gan_3d"]["input_shape"] == (92, 108, 84, 1)
    assert build_preset_generator("gan_3d", norm="channel").count_params() == convs + channel_norm
    assert build_preset_generator("gan_3d").count_params() == convs + zslice_norm
    with pytest.raises(TfmedganError):
        build_preset_generator("gan_2d")


def test_layer_sequence_of_original():
    model = build_resnet_generator(ORIGINAL_SHAPE, norm="zslice")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer",
        "ReflectionPadding",
        "Conv3D",
        "InstanceNormalization",
        "Activation",
        "Conv3D",
        "InstanceNormalization",
        "Activation",
        "Conv3D",
        "InstanceNormalization",
        "Activation",
        "Conv3D",
        "InstanceNormalization",
        "Add",
        "Conv3DTranspose",
        "InstanceNormalization",
        "Activation",
        "ReflectionPadding",
        "Conv3D",
        "Activation",
    ]
    assert model.get_layer("stem_norm").epsilon_mode == "std"
    assert model.get_layer("stem_norm").epsilon == 1e-5
    assert model.output_shape == (None,) + ORIGINAL_SHAPE


def test_tiny_forward_3d_static_and_dynamic():
    volume = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 16, 1)).astype("float32")
    static = build_resnet_generator((16, 16, 16, 1), base_filters=8, norm="zslice")
    outputs = static(volume).numpy()
    assert outputs.shape == (2, 16, 16, 16, 1) and outputs.dtype == np.float32
    assert np.abs(outputs).max() <= 1.0
    dynamic = build_resnet_generator(base_filters=8, n_downsamplings=2, n_residual_blocks=2)
    assert tuple(dynamic(np.zeros((1, 24, 16, 8, 1), "float32")).shape) == (1, 24, 16, 8, 1)
    assert dynamic.count_params() > 0


def test_tiny_forward_2d_two_channels():
    model = build_resnet_generator((32, 32, 2), base_filters=4, output_channels=3)
    outputs = model(np.zeros((1, 32, 32, 2), "float32"))
    assert tuple(outputs.shape) == (1, 32, 32, 3)
    assert model.get_layer("stem_conv").kernel.shape == (7, 7, 2, 4)


def test_invalid_shapes_are_rejected():
    with pytest.raises(TfmedganError, match="multiple of 2"):
        build_resnet_generator((15, 16, 16, 1), base_filters=4)
    with pytest.raises(TfmedganError, match="multiple of 4"):
        build_resnet_generator((16, 18, 16, 1), base_filters=4, n_downsamplings=2)
    with pytest.raises(TfmedganError, match="static last spatial axis"):
        build_resnet_generator((16, 16, None, 1), norm="zslice")
    with pytest.raises(TfmedganError):
        build_resnet_generator((16, 16, 16, 16, 1))
    with pytest.raises(TfmedganError):
        build_resnet_generator((16, 16, 16, 1), norm="batch")


def test_mixed_bfloat16_output_is_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_resnet_generator((8, 8, 8, 1), base_filters=4)
    assert model(np.zeros((1, 8, 8, 8, 1), "float32")).dtype == "float32"


def test_keras_save_load_round_trip(tmp_path):
    model = build_resnet_generator((16, 16, 16, 1), base_filters=4, norm="zslice")
    for variable in model.weights:  # non-trivial gamma/beta so the round trip means something
        variable.assign(
            np.random.default_rng(1).normal(0.0, 0.1, variable.shape).astype("float32")
            + (1.0 if variable.path.endswith("gamma") else 0.0)
        )
    path = tmp_path / "generator.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    volume = np.random.default_rng(2).uniform(-1, 1, (1, 16, 16, 16, 1)).astype("float32")
    np.testing.assert_array_equal(model(volume).numpy(), restored(volume).numpy())
    assert restored.get_layer("res1_norm1").axis_mode == "zslice"
    assert restored.get_layer("head_pad").padding == (3, 3, 3)


# ------------------------------------------------------------------------------------------
# Valid shapes and padding


def test_required_multiple_and_minimum():
    assert [required_multiple(n) for n in range(4)] == [1, 2, 4, 8]
    assert [minimum_spatial_size(n) for n in range(4)] == [4, 4, 4, 8]
    assert is_valid_spatial_size(156, 1) and is_valid_spatial_size(188, 2)
    assert not is_valid_spatial_size(2, 1) and not is_valid_spatial_size(90, 2)
    with pytest.raises(TfmedganError):
        required_multiple(-1)


def test_valid_input_shape_rounds_up():
    assert valid_input_shape((156, 188, 156), 1) == (156, 188, 156)
    assert valid_input_shape((150, 181, 149), 2) == (152, 184, 152)
    assert valid_input_shape((1, 5, 3), 1) == (4, 6, 4)
    assert valid_input_shape((92, 108, 84), 2) == (92, 108, 84)
    for shape in [(17, 33, 9), (3, 8, 100)]:
        for n in (1, 2, 3):
            result = valid_input_shape(shape, n)
            assert all(is_valid_spatial_size(size, n) for size in result)
            assert all(new >= old for new, old in zip(result, shape))


def test_centre_padding_floor_before_ceil_after():
    assert centre_padding((150, 181, 149), (156, 188, 156)) == ((3, 3), (3, 4), (3, 4))
    with pytest.raises(TfmedganError, match="larger than"):
        centre_padding((160, 10, 10), (156, 188, 156))


def test_pad_to_valid_and_crop_back():
    volume = np.random.default_rng(3).normal(size=(5, 7, 6)).astype("float32")
    padded, padding = pad_to_valid(volume, n_downsamplings=1)
    assert padded.shape == (6, 8, 6) and padding == ((0, 1), (0, 1), (0, 0))
    np.testing.assert_array_equal(crop_padding(padded, padding), volume)
    assert padded[5].sum() == 0

    with_channels = np.ones((150, 181, 149, 2), "float32")
    padded, padding = pad_to_valid(
        with_channels, 1, target_shape=(156, 188, 156), spatial_dims=3, constant_value=-1.0
    )
    assert padded.shape == (156, 188, 156, 2)
    assert padding == ((3, 3), (3, 4), (3, 4))
    assert padded[0, 0, 0, 0] == -1.0 and padded[3, 3, 3, 1] == 1.0
    np.testing.assert_array_equal(crop_padding(padded, padding), with_channels)
    with pytest.raises(TfmedganError, match="not accepted"):
        pad_to_valid(volume, 2, target_shape=(6, 8, 8))


def test_resize_upsampling_keeps_names_changes_kernel_shapes_and_has_no_checkerboard():
    transposed = build_resnet_generator((16, 16, 16, 1), base_filters=4, n_residual_blocks=0)
    resize = build_resnet_generator((16, 16, 16, 1), base_filters=4, n_residual_blocks=0, upsample="resize")
    assert resize.output_shape == transposed.output_shape == (None, 16, 16, 16, 1)
    assert transposed.get_layer("up1_conv").kernel.shape == (3, 3, 3, 4, 8)  # (out, in): transposed
    assert resize.get_layer("up1_conv").kernel.shape == (3, 3, 3, 8, 4)
    assert isinstance(resize.get_layer("up1_resize"), keras.layers.UpSampling3D)
    # Nearest x2 of a constant map followed by a convolution gives a constant interior; a stride-2
    # transposed 3-wide convolution gives alternating voxel values (its checkerboard).
    features = keras.ops.ones((1, 4, 4, 4, 4))  # the 4 channels of the down-sampled stage
    for upsample, periodic in (("resize", False), ("transposed", True)):
        model = build_resnet_generator((8, 8, 8, 1), base_filters=2, n_residual_blocks=0, upsample=upsample)
        layer = model.get_layer("up1_conv")
        layer.set_weights([np.ones_like(w) if w.ndim > 1 else np.zeros_like(w) for w in layer.get_weights()])
        if upsample == "resize":
            grown = model.get_layer("up1_pad")(model.get_layer("up1_resize")(features))
        else:
            grown = features
        interior = np.asarray(layer(grown))[0, 2:-2, 2:-2, 2:-2, 0]
        assert (interior.std() > 1e-3) == periodic
    with pytest.raises(TfmedganError, match="upsample"):
        build_resnet_generator((16, 16, 16, 1), base_filters=4, upsample="bilinear")


def test_without_norm_the_output_depends_on_absolute_intensity():
    """Instance norm makes the generator blind to an affine change of its input's intensities
    (the reason ``norm=None`` exists: a T1w -> T2w mapping depends on them); without it the output
    follows the input's level and there are no norm weights."""
    keras.utils.set_random_seed(3)
    volume = np.random.default_rng(1).uniform(0.0, 1.0, (1, 16, 16, 16, 1)).astype("float32")
    brighter = 2.0 * volume + 0.5
    normalised = build_resnet_generator((16, 16, 16, 1), base_filters=8)
    plain = build_resnet_generator((16, 16, 16, 1), base_filters=8, norm=None)
    assert not _norm_lengths(plain)
    # gamma and beta of the stem (8), down1 (16), two residual norms (16 each) and up1 (8)
    assert normalised.count_params() - plain.count_params() == 2 * (8 + 16 + 16 + 16 + 8)
    normalised_change = np.abs(normalised(brighter).numpy() - normalised(volume).numpy()).max()
    plain_change = np.abs(plain(brighter).numpy() - plain(volume).numpy()).max()
    assert normalised_change < 1e-3
    assert plain_change > 100 * max(normalised_change, 1e-5)


def test_mask_background_keeps_the_input_background_and_the_weights(tmp_path):
    """``mask_background=True`` sets the output to -1 exactly where the input is -1, leaves the
    foreground as the plain generator computes it, adds no weights, takes the plain generator's
    weights, passes no gradient from the background, and survives a save / load round trip."""
    import tensorflow as tf

    keras.utils.set_random_seed(4)
    volume = np.random.default_rng(2).uniform(-0.9, 1.0, (1, 16, 16, 16, 1)).astype("float32")
    volume[0, :5] = -1.0
    volume[0, :, :3] = -1.0
    background = volume <= -1.0
    plain = build_resnet_generator((None, None, None, 1), base_filters=4, norm=None, upsample="resize")
    masked = build_resnet_generator((None, None, None, 1), base_filters=4, norm=None, upsample="resize",
                                    mask_background=True)
    assert masked.count_params() == plain.count_params()
    masked.set_weights(plain.get_weights())
    plain_output, masked_output = plain(volume).numpy(), masked(volume).numpy()
    assert np.all(masked_output[background] == -1.0)
    assert np.abs(plain_output[background] + 1.0).min() > 1e-3  # the plain generator does not draw it
    np.testing.assert_array_equal(masked_output[~background], plain_output[~background])
    target = tf.constant(np.where(background, 5.0, 0.0).astype("float32"))  # errors only in the background
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.abs(masked(volume) - target) * tf.cast(background, tf.float32))
    assert all(float(tf.reduce_max(tf.abs(g))) == 0.0 for g in tape.gradient(loss, masked.trainable_variables))
    masked.save(tmp_path / "masked.keras")
    loaded = keras.saving.load_model(tmp_path / "masked.keras")
    np.testing.assert_array_equal(loaded(volume).numpy(), masked_output)


def test_skip_connection_shapes_weights_and_errors(tmp_path):
    """``skip="add"`` adds the stem's activations before the head (no weights: the plain
    generator's load into it); ``"concat"`` doubles the head's input channels (its kernel only
    grows); both change the output, keep the shape and survive a save / load round trip."""
    keras.utils.set_random_seed(5)
    volume = np.random.default_rng(3).uniform(-1, 1, (1, 16, 16, 16, 1)).astype("float32")
    plain = build_resnet_generator((None, None, None, 1), base_filters=4, norm=None, upsample="resize")
    added = build_resnet_generator((None, None, None, 1), base_filters=4, norm=None, upsample="resize", skip="add")
    joined = build_resnet_generator((None, None, None, 1), base_filters=4, norm=None, upsample="resize",
                                    skip="concat")
    assert added.count_params() == plain.count_params()
    assert joined.count_params() - plain.count_params() == 7**3 * 4 * 1  # head 7^3 kernel, 4 more channels
    assert joined.get_layer("head_conv").kernel.shape == (7, 7, 7, 8, 1)
    added.set_weights(plain.get_weights())
    assert added(volume).shape == joined(volume).shape == (1, 16, 16, 16, 1)
    assert np.abs(added(volume).numpy() - plain(volume).numpy()).max() > 1e-3
    joined.save(tmp_path / "joined.keras")
    np.testing.assert_array_equal(keras.saving.load_model(tmp_path / "joined.keras")(volume).numpy(),
                                  joined(volume).numpy())
    with pytest.raises(TfmedganError, match="skip must be one of"):
        build_resnet_generator((16, 16, 16, 1), skip="dense")
    with pytest.raises(TfmedganError, match="needs n_downsamplings >= 1"):
        build_resnet_generator((16, 16, 16, 1), n_downsamplings=0, skip="add")
