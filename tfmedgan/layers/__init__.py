"""Custom Keras layers shared by the networks (each module owns one concern)."""
from tfmedgan.layers.stylegan import (  # noqa: F401
    MinibatchStandardDeviation,
    PixelNormalization,
    WeightedSum,
)
from tfmedgan.layers.normalization import InstanceNormalization  # noqa: F401
from tfmedgan.layers.padding import ReflectionPadding  # noqa: F401
from tfmedgan.layers.normalization import RunningStatisticsBatchNormalization  # noqa: F401
from tfmedgan.layers.blurpool import BlurPool  # noqa: F401
from tfmedgan.layers.scale import ChannelScale  # noqa: F401
from tfmedgan.layers.masking import InputBackgroundMask  # noqa: F401
