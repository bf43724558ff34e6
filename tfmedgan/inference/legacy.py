"""Import of the original Keras 2 (2.1.6) seed-000 models: JSON architecture + HDF5 weights.

The seed-000 code (DCAN-Labs/MR-Image-Translation, ``CycleGAN_3D.py``) saved each network as
``<name>.json`` (``model.to_json()``, itself JSON-encoded a second time) and ``<name>.hdf5``
(``model.save_weights``). :func:`load_legacy_model` reads the architecture to recover the
configuration (input shape, filters, depth, instance-norm axis), builds the equivalent tfmedgan
network and copies the weights in layer order after checking every shape.

Example:
    >>> generator = load_legacy_model("G_A2B_model.json", "G_A2B_model.hdf5")  # doctest: +SKIP
    >>> synthetic_t2 = generator.predict(t1_volume[None, ..., None])           # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import keras
import numpy as np

from tfmedgan.errors import TfmedganError
from tfmedgan.networks.patchgan import build_patchgan_discriminator
from tfmedgan.networks.resnet_translator import build_resnet_generator

_NESTED_MODEL_CLASSES = ("Model", "Functional", "Sequential")
_UNSUPPORTED_CLASSES = (
    "Dense",
    "Flatten",
    "UpSampling2D",
    "UpSampling3D",
    "AveragePooling2D",
    "AveragePooling3D",
)


@dataclass(frozen=True)
class LegacyModelSpec:
    """What a Keras 2 architecture describes, in tfmedgan terms.

    Attributes:
        kind: ``"generator"`` or ``"discriminator"``.
        name: Model name in the JSON (e.g. ``"G_A2B_model"``).
        input_shape: Input shape without the batch axis, e.g. ``(156, 188, 156, 1)``.
        build_arguments: Keyword arguments for the tfmedgan builder.
    """

    kind: str
    name: str
    input_shape: tuple
    build_arguments: dict = field(default_factory=dict)


def read_legacy_architecture(json_path: str | Path) -> dict:
    """Read a Keras 2 ``model.to_json()`` file, also when it was JSON-encoded twice.

    Args:
        json_path: Path of the ``.json`` file.

    Returns:
        The architecture dictionary (``{"class_name": "Model", "config": {...}, ...}``).
    """
    path = Path(json_path)
    try:
        content: Any = json.loads(path.read_text())
        if isinstance(content, str):
            content = json.loads(content)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TfmedganError(f"cannot read a Keras architecture from {path}: {error}") from None
    if not isinstance(content, dict) or content.get("class_name") not in _NESTED_MODEL_CLASSES:
        raise TfmedganError(f"{path} is not a Keras 2 model architecture (no 'Model' class_name)")
    return content


def _flatten_layers(model_config: dict) -> list[dict]:
    """Return the layers of a (possibly nested) Keras 2 model config, nested models expanded."""
    layers = []
    for layer in model_config.get("config", {}).get("layers", []):
        if layer.get("class_name") in _NESTED_MODEL_CLASSES:
            layers.extend(_flatten_layers(layer))
        else:
            layers.append(layer)
    return layers


def _all_strides(layer: dict, value: int) -> bool:
    strides = layer["config"].get("strides", [1])
    return all(int(stride) == value for stride in strides)


def _kernel(layer: dict) -> int:
    sizes = {int(size) for size in layer["config"]["kernel_size"]}
    return sizes.pop() if len(sizes) == 1 else -1


def _norm_settings(norm_layers: list[dict], rank: int, source: str) -> dict:
    """Map keras-contrib / tfa InstanceNormalization configs to tfmedgan norm arguments."""
    if not norm_layers:
        return {}
    modes, epsilons = set(), set()
    for layer in norm_layers:
        axis = layer["config"].get("axis")
        if axis is None:
            raise TfmedganError(f"{source}: InstanceNormalization with axis=None is not supported")
        axis = int(axis) % rank
        if axis == rank - 1:
            modes.add("channel")
        elif axis == rank - 2:
            modes.add("zslice")
        else:
            raise TfmedganError(f"{source}: InstanceNormalization axis {axis} is not supported")
        epsilons.add(float(layer["config"].get("epsilon", 1e-3)))
    if len(modes) != 1 or len(epsilons) != 1:
        raise TfmedganError(f"{source}: mixed instance-normalisation settings {modes} {epsilons}")
    # keras-contrib divides by (std + epsilon); tensorflow-addons ("Addons>...") by sqrt(var + eps).
    addons = any(layer["class_name"].startswith("Addons>") for layer in norm_layers)
    return {
        "norm": modes.pop(),
        "norm_epsilon": epsilons.pop(),
        "norm_epsilon_mode": "variance" if addons else "std",
    }


def describe_legacy_architecture(
    architecture: dict, source: str = "architecture"
) -> LegacyModelSpec:
    """Recognise the seed-000 generator or discriminator in a Keras 2 architecture.

    Args:
        architecture: Dictionary from :func:`read_legacy_architecture`.
        source: File name used in error messages.

    Returns:
        A :class:`LegacyModelSpec` with the tfmedgan builder arguments.
    """
    layers = _flatten_layers(architecture)
    inputs = [layer for layer in layers if layer["class_name"] == "InputLayer"]
    if not inputs:
        raise TfmedganError(f"{source}: no InputLayer found")
    batch_shape = inputs[0]["config"].get("batch_input_shape") or inputs[0]["config"].get(
        "batch_shape"
    )
    if not batch_shape:
        raise TfmedganError(f"{source}: the InputLayer has no batch_input_shape")
    input_shape = tuple(None if size is None else int(size) for size in batch_shape[1:])
    spatial_dims = len(input_shape) - 1
    if spatial_dims not in (2, 3):
        raise TfmedganError(f"{source}: input shape {input_shape} is neither 2D nor 3D")
    rank = spatial_dims + 2
    classes = [layer["class_name"] for layer in layers]
    unsupported = sorted(set(classes) & set(_UNSUPPORTED_CLASSES))
    if unsupported:
        raise TfmedganError(
            f"{source}: layers {unsupported} belong to a variant tfmedgan does not import "
            f"(dense head, resize convolution or multi-scale discriminator)"
        )
    conv_class = f"Conv{spatial_dims}D"
    convs = [layer for layer in layers if layer["class_name"] == conv_class]
    transposed = [
        layer for layer in layers if layer["class_name"] == f"Conv{spatial_dims}DTranspose"
    ]
    norms = [
        layer for layer in layers if layer["class_name"].split(">")[-1] == "InstanceNormalization"
    ]
    adds = [layer for layer in layers if layer["class_name"] == "Add"]
    pads = [layer for layer in layers if layer["class_name"].startswith("ReflectionPadding")]
    name = architecture.get("config", {}).get("name") or Path(source).stem
    if not convs:
        raise TfmedganError(f"{source}: no {conv_class} layers, not a seed-000 network")

    if pads and transposed:
        n_downsamplings = sum(1 for layer in convs if _all_strides(layer, 2))
        first, last = convs[0], convs[-1]
        if (
            len(transposed) != n_downsamplings
            or len(pads) != 2
            or _kernel(first) != 7
            or _kernel(last) != 7
            or len(norms) != 1 + 2 * n_downsamplings + 2 * len(adds)
        ):
            raise TfmedganError(f"{source}: layer sequence does not match the ResNet generator")
        arguments = {
            "input_shape": input_shape,
            "base_filters": int(first["config"]["filters"]),
            "n_downsamplings": n_downsamplings,
            "n_residual_blocks": len(adds),
            "output_channels": int(last["config"]["filters"]),
            "name": name,
        }
        arguments.update(_norm_settings(norms, rank, source))
        return LegacyModelSpec("generator", name, input_shape, arguments)

    if not pads and not transposed and not adds:
        downsampling = [layer for layer in convs if _all_strides(layer, 2)]
        last = convs[-1]
        if (
            len(downsampling) != len(convs) - 1
            or any(_kernel(layer) != 4 for layer in convs)
            or int(last["config"]["filters"]) != 1
            or not _all_strides(last, 1)
        ):
            raise TfmedganError(
                f"{source}: layer sequence does not match the PatchGAN discriminator"
            )
        arguments = {
            "input_shape": input_shape,
            "base_filters": int(convs[0]["config"]["filters"]),
            "n_layers": len(downsampling),
            "name": name,
        }
        settings = _norm_settings(norms, rank, source)
        arguments.update(settings if settings else {"norm": None})
        return LegacyModelSpec("discriminator", name, input_shape, arguments)

    raise TfmedganError(f"{source}: neither the seed-000 generator nor its discriminator")


def read_legacy_weights(hdf5_path: str | Path) -> list[tuple[str, list[np.ndarray]]]:
    """Read the weight arrays of a Keras 2 HDF5 file in saved layer order.

    Handles both ``model.save_weights`` files (layer groups at the root) and full-model files
    (layer groups under ``model_weights``). Nested models contribute all their arrays under the
    nested model's name.

    Args:
        hdf5_path: Path of the ``.hdf5``/``.h5`` file.

    Returns:
        ``[(layer_name, [array, ...]), ...]`` for the layers that hold weights, arrays in the
        saved order (kernel before bias, gamma before beta).
    """
    path = Path(hdf5_path)
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as error:
        raise TfmedganError(f"cannot open {path} as HDF5: {error}") from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in root.attrs:
            raise TfmedganError(
                f"{path} is not a Keras 2 weights file (no 'layer_names' attribute)"
            )
        result = []
        for raw_name in root.attrs["layer_names"]:
            layer_name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            group = root[layer_name]
            weight_names = [
                item.decode() if isinstance(item, bytes) else str(item)
                for item in group.attrs.get("weight_names", [])
            ]
            if weight_names:
                result.append((layer_name, [np.asarray(group[weight]) for weight in weight_names]))
    return result


def _read_embedded_architecture(hdf5_path: Path) -> dict:
    """Return the architecture stored in a full-model HDF5 file (``model.save``)."""
    try:
        with h5py.File(hdf5_path, "r") as handle:
            config = handle.attrs.get("model_config")
    except (OSError, ValueError) as error:
        raise TfmedganError(f"cannot open {hdf5_path} as HDF5: {error}") from None
    if config is None:
        raise TfmedganError(
            f"{hdf5_path} holds weights only; pass the matching .json architecture as json_path"
        )
    if isinstance(config, bytes):
        config = config.decode()
    return json.loads(config)


def assign_legacy_weights(
    model: keras.Model, weights: Sequence[tuple[str, list[np.ndarray]]], source: str = "weights"
) -> None:
    """Copy Keras 2 weight arrays into a tfmedgan model in layer order, checking every shape.

    Args:
        model: The tfmedgan network (same layer sequence as the original).
        weights: Output of :func:`read_legacy_weights`.
        source: File name used in error messages.
    """
    arrays = [(layer_name, array) for layer_name, layer_arrays in weights for array in layer_arrays]
    variables = [variable for layer in model.layers for variable in layer.weights]
    if len(arrays) != len(variables):
        raise TfmedganError(
            f"{source} holds {len(arrays)} weight arrays but the rebuilt model has "
            f"{len(variables)}; not the same architecture"
        )
    for (layer_name, array), variable in zip(arrays, variables):
        if tuple(array.shape) != tuple(variable.shape):
            raise TfmedganError(
                f"{source}: weight of layer {layer_name!r} has shape {tuple(array.shape)}, "
                f"expected {tuple(variable.shape)} for {variable.path}"
            )
    for (_, array), variable in zip(arrays, variables):
        variable.assign(array.astype(variable.dtype))


def load_legacy_model(
    json_path: str | Path | None,
    hdf5_path: str | Path,
    input_shape: Sequence[int | None] | None = None,
) -> keras.Model:
    """Rebuild a seed-000 Keras 2 network in tfmedgan and load its original weights.

    Generators become :func:`~tfmedgan.networks.resnet_translator.build_resnet_generator`
    models (``norm="zslice"``, ``norm_epsilon_mode="std"`` for the keras-contrib weights),
    discriminators :func:`~tfmedgan.networks.patchgan.build_patchgan_discriminator` models.
    The returned model has the JSON's model name (e.g. ``G_A2B_model``).

    Args:
        json_path: The ``.json`` architecture; None to read it from a full-model HDF5 file.
        hdf5_path: The ``.hdf5`` weights (``save_weights`` or full-model layout).
        input_shape: Optional input shape without the batch axis to build with instead of the
            JSON's; same rank and channels. With per-Z-slice normalisation the last spatial size
            must stay the trained one (e.g. ``(None, None, 156, 1)``).

    Returns:
        The ``keras.Model`` with the original weights.
    """
    hdf5_path = Path(hdf5_path)
    if json_path is None:
        architecture = _read_embedded_architecture(hdf5_path)
        source = hdf5_path.name
    else:
        architecture = read_legacy_architecture(json_path)
        source = Path(json_path).name
    spec = describe_legacy_architecture(architecture, source)
    arguments = dict(spec.build_arguments)
    if input_shape is not None:
        input_shape = tuple(None if size is None else int(size) for size in input_shape)
        if len(input_shape) != len(spec.input_shape) or input_shape[-1] != spec.input_shape[-1]:
            raise TfmedganError(
                f"input_shape {input_shape} must have the rank and channels of the original "
                f"{spec.input_shape}"
            )
        if arguments.get("norm") == "zslice" and input_shape[-2] != spec.input_shape[-2]:
            raise TfmedganError(
                f"input_shape {input_shape}: the per-Z-slice normalisation weights of {source} "
                f"fix the last spatial size to {spec.input_shape[-2]}"
            )
        arguments["input_shape"] = input_shape
    if spec.kind == "generator":
        model = build_resnet_generator(**arguments)
    else:
        model = build_patchgan_discriminator(**arguments)
    assign_legacy_weights(model, read_legacy_weights(hdf5_path), hdf5_path.name)
    return model
