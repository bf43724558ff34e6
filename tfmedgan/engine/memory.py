"""Memory tools: gradient checkpointing of Keras functional models, and an estimate of the
activation memory a training step keeps (the process-RSS measurement is in ``bench/rss.py``).

Gradient checkpointing (``--recompute``) trades compute for memory: instead of keeping every
activation of a network for the backward pass, only the tensors at a few *boundaries* are kept and
each segment between two boundaries is run again during the backward pass
(``tf.recompute_grad``). :func:`checkpointed_call` wraps a functional model that way.

Measured on the seed-000 generator (TF 2.21, CPU, inside ``tf.function``, peak RSS of one
forward + backward pass at 96^3 in units of one full-resolution activation): no recompute 12.6,
one ``tf.recompute_grad`` around the whole model 13.8 (its backward pass holds every activation at
once), segments inside the whole-model wrapper (``mode="nested"``) 7.3. Several recomputed calls
whose output gradients are ready together are recomputed in parallel by TensorFlow's executor
(2 calls: 22.7 instead of 13.9); :func:`after` orders them.

Example:
    >>> generator = build_resnet_generator((16, 16, 16, 1), base_filters=4)  # doctest: +SKIP
    >>> forward = checkpointed_call(generator, ["down1_relu", "res1_add"])     # doctest: +SKIP
    >>> with tf.GradientTape() as tape:                                         # doctest: +SKIP
    ...     loss = tf.reduce_mean(forward(volumes))
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import tensorflow as tf

from tfmedgan.errors import TfmedganError

RECOMPUTE_MODES = ("model", "segments", "nested")


# -- segments --------------------------------------------------------------------------------------
def _single_input_output(model: keras.Model) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TfmedganError(f"gradient checkpointing needs a model with one input and one output, {model.name} has "
                            f"{len(model.inputs)} and {len(model.outputs)}")


def _layer_nodes(model: keras.Model) -> list:
    """The layer calls of a functional model (any number of inputs and outputs) in execution
    order, input nodes excluded."""
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        raise TfmedganError(f"{model.name} is not a functional model; its activations cannot be counted or cut")
    ordered = []
    for depth in sorted(nodes_by_depth, reverse=True):
        ordered += [node for node in nodes_by_depth[depth] if node.operation is not None and not node.is_input]
    return ordered


def _model_nodes(model: keras.Model) -> list:
    """The layer calls of a one-input, one-output functional model that calls each layer once
    (a model gradient checkpointing can cut)."""
    _single_input_output(model)
    ordered = _layer_nodes(model)
    names = [node.operation.name for node in ordered]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TfmedganError(f"{model.name} calls {', '.join(repeated)} more than once; gradient checkpointing "
                            "needs every layer called once")
    return ordered


def _carried_tensors(model: keras.Model) -> dict[str, list]:
    """For each layer of a one-input, one-output functional model whose output is used later, the
    tensors alive right after it (computed, and needed by a later layer or as the output), in the
    order they were made; the model's input first if it is still needed."""
    nodes = _model_nodes(model)
    made = {id(model.inputs[0]): -1}
    tensors = {id(model.inputs[0]): model.inputs[0]}
    last_use = {id(model.inputs[0]): -1}
    for index, node in enumerate(nodes):
        for tensor in node.input_tensors:
            last_use[id(tensor)] = max(last_use.get(id(tensor), -1), index)
        for tensor in node.outputs:
            made[id(tensor)] = index
            tensors[id(tensor)] = tensor
    last_use[id(model.outputs[0])] = len(nodes)
    carried = {}
    for index, node in enumerate(nodes):
        alive = sorted((when, key) for key, when in made.items() if when <= index and last_use.get(key, when) > index)
        if len(node.outputs) == 1 and id(node.outputs[0]) in {key for _, key in alive}:
            carried[node.operation.name] = [tensors[key] for _, key in alive]
    return carried


def articulation_layers(model: keras.Model) -> list[str]:
    """Names of the layers whose output is the only tensor alive at that point of the model.

    A functional model can be cut after such a layer carrying one tensor: everything later depends
    on the earlier layers only through its output (e.g. the output of a residual block, not the
    tensors inside it, which the shortcut bypasses). :func:`split_model` also accepts the other
    layers (:func:`cut_points`) and then carries every tensor still needed.

    Args:
        model: A functional Keras model with one input and one output, each layer called once.

    Returns:
        Layer names in execution order (the last layer included).
    """
    return [name for name, alive in _carried_tensors(model).items() if len(alive) == 1]


def cut_points(model: keras.Model) -> dict[str, int]:
    """The layers :func:`split_model` can cut after, with the number of tensors each cut carries.

    Args:
        model: A functional Keras model with one input and one output, each layer called once.

    Returns:
        ``{layer name: tensors alive after it}`` in execution order; 1 for
        :func:`articulation_layers`, more where a skip connection or the model's input (e.g.
        :class:`~tfmedgan.layers.InputBackgroundMask`) bypasses the cut.
    """
    return {name: len(alive) for name, alive in _carried_tensors(model).items()}


def split_model(model: keras.Model, boundaries: Sequence[str]) -> list[keras.Model]:
    """Cut a functional model after the named layers into consecutive sub-models sharing its layers.

    Each sub-model takes the tensors alive at the previous cut and returns those alive at its own
    cut (one tensor at an articulation layer; a list where a skip connection bypasses the cut).

    Args:
        model: Functional model with one input and one output.
        boundaries: Names of layers in :func:`cut_points`.

    Returns:
        Sub-models whose composition equals ``model`` (same weights, no copies).

    Raises:
        TfmedganError: A name is not a layer of the model or not a valid cut point.
    """
    carried = _carried_tensors(model)
    order = {name: index for index, name in enumerate(carried)}
    for name in boundaries:
        if name not in order:
            raise TfmedganError(f"{model.name}: cannot cut after {name!r}; valid cut points: {', '.join(carried)}")
    last = list(carried)[-1]
    cuts = [carried[name] for name in sorted(set(boundaries), key=order.get) if name != last]
    points = [[model.inputs[0]], *cuts, [model.outputs[0]]]
    segments = []
    for index, (start, end) in enumerate(zip(points[:-1], points[1:])):
        # a tensor carried across the whole segment passes through a weightless Identity (a
        # functional model cannot return one of its inputs); the original model is unchanged
        started = {id(tensor) for tensor in start}
        end = [keras.layers.Identity(name=f"{model.name}_carry{index}_{position}")(tensor) if id(tensor) in started
               else tensor for position, tensor in enumerate(end)]
        # Keras re-wires the model's own Input tensor to a new node when a sub-model takes it
        # beside intermediate tensors (the model could then no longer be saved): keep its history
        history = model.inputs[0]._keras_history
        try:
            segments.append(keras.Model(start if len(start) > 1 else start[0], end if len(end) > 1 else end[0],
                                        name=f"{model.name}_segment{index}"))
        finally:
            model.inputs[0]._keras_history = history
    return segments


def _call(model: keras.Model, training: bool) -> Callable[..., tf.Tensor | list[tf.Tensor]]:
    def forward(*inputs: tf.Tensor) -> tf.Tensor | list[tf.Tensor]:
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=training)
        if isinstance(outputs, (list, tuple)):
            # keras.layers.Identity returns a carried input object itself; tf.custom_gradient
            # needs every output made by an op of this graph
            return [tf.identity(tensor) for tensor in outputs]
        return outputs

    return forward


def checkpointed_call(
    model: keras.Model,
    boundaries: Sequence[str] | None = None,
    mode: str = "nested",
    training: bool = True,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function computing ``model(x, training)`` whose backward pass recomputes activations.

    Args:
        model: Functional model with one input and one output.
        boundaries: Layers after which the model is cut (see :func:`split_model`); None or empty
            = no segments (``mode`` then behaves as ``"model"``).
        mode: ``"model"``: one ``tf.recompute_grad`` around the whole model (keeps nothing of its
            forward pass; its backward pass holds all activations at once). ``"segments"``: one
            per segment (keeps the boundary tensors). ``"nested"``: segments inside a whole-model
            wrapper (keeps nothing; the backward pass holds the boundary tensors of this one model
            and one segment's activations; the segments run three times in all).
        training: The ``training`` flag passed to the layers.

    Returns:
        ``forward(inputs) -> outputs``; values and gradients equal the plain call's.
    """
    if mode not in RECOMPUTE_MODES:
        raise TfmedganError(f"recompute mode must be one of {RECOMPUTE_MODES}, got {mode!r}")
    _single_input_output(model)
    if not boundaries or mode == "model":
        return tf.recompute_grad(_call(model, training))
    segments = [tf.recompute_grad(_call(segment, training)) for segment in split_model(model, boundaries)]

    def through_segments(inputs: tf.Tensor) -> tf.Tensor:
        carried = inputs
        for segment in segments:
            carried = segment(*carried) if isinstance(carried, (list, tuple)) else segment(carried)
        return carried

    if mode == "segments":
        return through_segments
    return tf.recompute_grad(through_segments)


def _zero_after(tensor: tf.Tensor) -> tf.Tensor:
    """A float32 scalar 0 that can only be computed once ``tensor`` exists (a data dependency that
    graph optimisers keep, as ``tf.recompute_grad`` itself does; NaN-safe)."""
    element = tf.reduce_max(tf.reshape(tensor, [-1])[:1])
    element = tf.cast(element, tf.bool)
    return tf.where(tf.equal(element, element), 0.0, float("nan"))


@tf.custom_gradient
def after(inputs: tf.Tensor, previous: tf.Tensor):
    """``inputs`` unchanged, computed after ``previous``; in the backward pass, the gradient of
    ``previous`` is held back until the gradient of ``inputs`` is complete.

    With gradient checkpointing, TensorFlow would otherwise recompute the networks whose output
    gradients are ready at the same time in parallel, holding several networks' activations at
    once. Feeding each recomputed network ``after(its_input, output_of_the_previous_network)``
    makes the backward pass go through the networks one at a time, in reverse order.

    Args:
        inputs: Input of the next network call.
        previous: Output of the previous network call.

    Returns:
        ``inputs`` (values and gradient unchanged).
    """
    with tf.control_dependencies([previous]):
        outputs = tf.identity(inputs)

    def gradient(upstream):
        held = tf.zeros_like(previous) + tf.cast(_zero_after(upstream), previous.dtype)
        return upstream, held

    return outputs, gradient


# -- accounting ------------------------------------------------------------------------------------
_SAVES_INPUT = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose, keras.layers.Dense, keras.layers.LeakyReLU,
)


def _elements(tensor) -> int:
    size = 1
    for dimension in tensor.shape[1:]:
        if dimension is None:
            raise TfmedganError("memory accounting needs a model built with a fully static input shape")
        size *= int(dimension)
    return size


def _tensor_bytes(tensor) -> int:
    return _elements(tensor) * (2 if "16" in str(tensor.dtype) else 4)


def saved_activation_bytes(model: keras.Model) -> int:
    """Bytes per example a training forward pass of ``model`` keeps for its backward pass.

    Counted per layer (TensorFlow's gradient functions): convolutions, dense and LeakyReLU keep
    their input; ReLU/tanh/sigmoid activations their output; :class:`InstanceNormalization` its
    output (its closed-form gradient; usually the same tensor the next activation keeps); other
    normalisation layers two float32 tensors of their output size (centred and normalised
    values); padding, adds and the like nothing. A tensor needed by several layers counts once; its size uses the tensor's dtype
    (build the model under the mixed-precision policy to account for it).

    Args:
        model: Functional model (any number of inputs and outputs) with fully static input shapes.

    Returns:
        Bytes for one example.
    """
    kept: dict = {}
    for node in _layer_nodes(model):
        layer = node.operation
        output = node.outputs[0]
        if isinstance(layer, _SAVES_INPUT):
            for tensor in node.input_tensors:
                kept[id(tensor)] = _tensor_bytes(tensor)
        elif isinstance(layer, keras.layers.Activation) or type(layer).__name__ == "InstanceNormalization":
            kept[id(output)] = _tensor_bytes(output)
        elif "Normalization" in type(layer).__name__:
            kept[("normalisation", id(output))] = 2 * 4 * _elements(output)
    return sum(kept.values())


def largest_activation_elements(model: keras.Model) -> int:
    """Elements per example of the largest layer output of a static-shape functional model."""
    return max(_elements(tensor) for node in _layer_nodes(model) for tensor in node.outputs)


def boundary_bytes(model: keras.Model, boundaries: Sequence[str]) -> int:
    """Bytes per example of the tensors kept between segments: every tensor carried across a cut
    after one of the named layers (its output, and any skip that bypasses it), each counted once."""
    carried = _carried_tensors(model)
    kept = {id(tensor): tensor for name in boundaries for tensor in carried[name]}
    return sum(_tensor_bytes(tensor) for tensor in kept.values())
