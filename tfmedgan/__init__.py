"""tfmedgan: TensorFlow/Keras 3 generative models for medical images."""

__version__ = "0.1.0"

from tfmedgan.errors import TfmedganError  # noqa: F401
