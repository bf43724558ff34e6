import numpy as np

from tfmedgan.networks.dcgan import build_discriminator, build_generator


def test_parameter_counts_match_the_seed_at_256_px():
    assert build_generator(256, 256, 1).count_params() == 69_114_432
    assert build_discriminator(256, 1).count_params() == 296_545


def test_shapes_and_linear_output_at_32_px():
    generator = build_generator(resolution=32, latent_dim=8, channels=3)
    discriminator = build_discriminator(resolution=32, channels=3)
    images = generator(np.random.default_rng(0).normal(size=(2, 8)).astype("float32"), training=False)
    assert images.shape == (2, 32, 32, 3)
    assert discriminator(images, training=False).shape == (2, 1)
    assert generator.layers[-1].activation.__name__ == "linear"


def test_mixed_precision_keeps_outputs_float32():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    generator = build_generator(resolution=16, latent_dim=4)
    discriminator = build_discriminator(resolution=16)
    images = generator(np.zeros((1, 4), "float32"))
    assert images.dtype == "float32"
    assert discriminator(images).dtype == "float32"
    assert generator.layers[2].compute_dtype == "bfloat16"


def test_tanh_output_bounds_the_images_and_keeps_the_weights():
    import pytest

    linear = build_generator(resolution=16, latent_dim=4)
    tanh = build_generator(resolution=16, latent_dim=4, output_activation="tanh")
    assert tanh.count_params() == linear.count_params()
    tanh.set_weights(linear.get_weights())  # original (linear) weights load unchanged
    latents = np.random.default_rng(1).normal(size=(3, 4)).astype("float32") * 50
    raw = np.asarray(linear(latents, training=False))
    np.testing.assert_allclose(np.asarray(tanh(latents, training=False)), np.tanh(raw), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output_activation"):
        build_generator(resolution=16, latent_dim=4, output_activation="sigmoid")
