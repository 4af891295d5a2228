"""K copies of a built-in model (`mlp`, `cnn`) as one set of stacked weights.

Why: on a small model a step is dominated by per-op overhead, not arithmetic; K members
stacked on a leading axis run one batched matmul (or one grouped convolution) where K solo
trials run K graphs. Every member computes exactly the layers of the Keras model it stands
for (`search.training.models`): the stacked weights are the members' own Keras weights, in
`model.get_weights()` order, one slice per member.

Layouts: the shared input has no member axis; images of the K members sit side by side on
the channel axis ([B, H, W, K*C], member-major, so a grouped convolution keeps them apart);
flat features are [K, B, D]. Where TensorFlow cannot train grouped convolutions (CPUs
without oneDNN) the convolutions and poolings are matmuls and reshapes, compiled with XLA.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

_ACTIVATIONS = ("relu", "linear", "softmax")


@dataclass(frozen=True)
class Layer:
    """One layer of the Keras model, as much as the fused forward pass needs."""

    kind: str  # dense, conv, pool, flatten, reshape
    activation: str = "linear"
    shape: tuple[int, ...] = ()  # reshape's target; pool's size
    padding: str = "VALID"


def describe(model: keras.Model) -> list[Layer] | None:
    """The model's layers in a form the stacked net computes; None when it cannot (a layer
    it does not know, dropout that is on, strides, another activation...)."""
    layers: list[Layer] = []
    for layer in model.layers:
        name = type(layer).__name__
        if name == "InputLayer" or (name == "Dropout" and float(layer.rate) == 0.0):
            continue
        if name == "Flatten":
            layers.append(Layer("flatten"))
        elif name == "Reshape":
            layers.append(Layer("reshape", shape=tuple(int(d) for d in layer.target_shape)))
        elif name == "MaxPooling2D":
            if tuple(layer.pool_size) != tuple(layer.strides) or layer.padding != "valid":
                return None
            layers.append(Layer("pool", shape=tuple(int(d) for d in layer.pool_size)))
        elif name in ("Dense", "Conv2D"):
            activation = _activation(layer)
            if activation is None or not layer.use_bias:
                return None
            if name == "Conv2D" and not _plain_conv(layer):
                return None
            padding = "SAME" if name == "Conv2D" and layer.padding == "same" else "VALID"
            kind = "dense" if name == "Dense" else "conv"
            layers.append(Layer(kind, activation, padding=padding))
        else:
            return None
    if not layers or layers[-1].kind != "dense":
        return None
    if any(layer.activation == "softmax" for layer in layers[:-1]):
        return None
    return layers


def _activation(layer: Any) -> str | None:
    name = getattr(layer.activation, "__name__", None)
    return name if name in _ACTIVATIONS else None


def _plain_conv(layer: Any) -> bool:
    return (
        tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and int(layer.groups) == 1
        and layer.data_format == "channels_last"
    )


class StackedNet:
    """The stacked weights of K members and their forward pass."""

    def __init__(self, layers: list[Layer], shapes: list[tuple[int, ...]], k: int) -> None:
        self.layers, self.k = layers, k
        self.grouped_convs = grouped_conv_trains()  # asked here, eagerly, not while tracing
        self.variables = [
            tf.Variable(tf.zeros((k, *shape)), trainable=True, name=f"stacked_{i}")
            for i, shape in enumerate(shapes)
        ]
        self._assign = tf.function(self._assign_all, autograph=False, reduce_retracing=True)

    @property
    def suits_xla(self) -> bool:
        """XLA compiles matmuls well and TensorFlow's grouped convolutions poorly: compile
        the steps unless the net has grouped convolutions."""
        return not self.grouped_convs or all(layer.kind != "conv" for layer in self.layers)

    def load(self, members: list[list[np.ndarray]]) -> None:
        """Every member's Keras weights (`model.get_weights()` order) into its slice."""
        stacked = [np.stack(ws) for ws in zip(*members, strict=True)]
        self._assign(stacked)

    def _assign_all(self, values: list[tf.Tensor]) -> None:
        for var, value in zip(self.variables, values, strict=True):
            var.assign(value)

    def member_weights(self, k: int) -> list[np.ndarray]:
        """Member k's weights, as its solo Keras model's `get_weights()` would give them."""
        return [np.asarray(var[k].numpy()) for var in self.variables]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """[K, B, outputs] pre-activation outputs (logits for a softmax head)."""
        h, stacked = x, False
        params = iter(self.variables)
        for layer in self.layers:
            if layer.kind == "reshape":
                h = tf.reshape(h, [-1, *layer.shape])
            elif layer.kind == "pool":
                h = self._pool(h, layer.shape)
            elif layer.kind == "flatten":
                h = self._flatten(h, stacked)
            elif layer.kind == "conv":
                h = self._conv(h, next(params), next(params), layer)
                stacked = True
            else:
                h = self._dense(h, next(params), next(params), stacked, layer)
                stacked = True
        return h

    def _pool(self, h: tf.Tensor, size: tuple[int, ...]) -> tf.Tensor:
        """Max pooling (stride = size, VALID); on the matmul path a reshape and a max, which
        XLA compiles far better than a pooling window and its gradient."""
        if self.grouped_convs:
            return tf.nn.max_pool2d(h, size, size, "VALID")
        (ph, pw), (_, height, width, channels) = size, h.shape
        rows, cols = int(height) // ph, int(width) // pw
        h = tf.reshape(h[:, : rows * ph, : cols * pw, :], [-1, rows, ph, cols, pw, int(channels)])
        return tf.reduce_max(h, axis=[2, 4])

    def _flatten(self, h: tf.Tensor, stacked: bool) -> tf.Tensor:
        if not stacked:
            return tf.reshape(h, [tf.shape(h)[0], -1])
        if h.shape.rank == 3:
            return h
        _, height, width, channels = h.shape
        per = int(channels) // self.k
        h = tf.reshape(h, [-1, int(height), int(width), self.k, per])
        h = tf.transpose(h, [3, 0, 1, 2, 4])
        return tf.reshape(h, [self.k, tf.shape(h)[1], int(height) * int(width) * per])

    def _conv(
        self, h: tf.Tensor, kernel: tf.Variable, bias: tf.Variable, layer: Layer
    ) -> tf.Tensor:
        """One convolution for all members: member kernels side by side on the output axis;
        on stacked inputs a grouped convolution (groups = K, member-major channels). Where
        this TensorFlow cannot train a grouped convolution, the same sums as matmuls."""
        _, kh, kw, c_in, c_out = kernel.shape
        stacked = int(h.shape[-1]) != int(c_in)
        if not self.grouped_convs:
            h = _conv_as_matmul(h, kernel, self.k if stacked else 1, layer.padding)
        else:
            k = tf.transpose(kernel, [1, 2, 3, 0, 4])
            k = tf.reshape(k, [int(kh), int(kw), int(c_in), self.k * int(c_out)])
            h = tf.nn.conv2d(h, k, 1, layer.padding)
        h = tf.nn.bias_add(h, tf.reshape(bias, [-1]))
        return _apply(h, layer.activation)

    def _dense(
        self, h: tf.Tensor, kernel: tf.Variable, bias: tf.Variable, stacked: bool, layer: Layer
    ) -> tf.Tensor:
        if not stacked:  # the shared input: one batch, K kernels (broadcast batch matmul)
            h = h[tf.newaxis]
        h = tf.matmul(h, kernel) + bias[:, tf.newaxis, :]
        return h if layer.activation == "softmax" else _apply(h, layer.activation)


def _conv_as_matmul(h: tf.Tensor, kernel: tf.Variable, groups: int, padding: str) -> tf.Tensor:
    """The members' stride-1 convolutions as im2col and matmuls: the kernel's kh x kw
    shifted views of the input, then on the shared input (groups = 1) one
    [B*H*W, kh*kw*C] x [kh*kw*C, K*C_out] matmul, on stacked inputs (groups = K,
    member-major channels) one matmul per member, batched (an einsum over K). Only slices,
    reshapes and matmuls, whose gradients every CPU build has and which XLA compiles well;
    the sums are a convolution's (equal to the bit here without oneDNN)."""
    k, kh, kw, c_in, c_out = (int(d) for d in kernel.shape)
    if padding == "SAME":  # TensorFlow's SAME at stride 1: the odd pixel goes after
        top, left = (kh - 1) // 2, (kw - 1) // 2
        h = tf.pad(h, [[0, 0], [top, kh - 1 - top], [left, kw - 1 - left], [0, 0]])
    height, width = int(h.shape[1]) - kh + 1, int(h.shape[2]) - kw + 1
    views = [h[:, i : i + height, j : j + width, :] for i in range(kh) for j in range(kw)]
    patches = tf.stack(views, axis=3)  # [B, H, W, kh*kw, groups*C]
    if groups == 1:
        rows = tf.reshape(patches, [-1, kh * kw * c_in])
        kernels = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [kh * kw * c_in, k * c_out])
        return tf.reshape(tf.matmul(rows, kernels), [-1, height, width, k * c_out])
    patches = tf.reshape(patches, [-1, height, width, kh * kw, k, c_in])
    kernels = tf.reshape(kernel, [k, kh * kw, c_in, c_out])
    out = tf.einsum("bhwtkc,ktco->bhwko", patches, kernels)
    return tf.reshape(out, [-1, height, width, k * c_out])


def _apply(h: tf.Tensor, activation: str) -> tf.Tensor:
    return tf.nn.relu(h) if activation == "relu" else h


@functools.cache
def grouped_conv_trains() -> bool:
    """Whether this process's TensorFlow can train a grouped convolution in a graph.

    Why a probe: on CPUs TensorFlow runs without oneDNN (by default, those without AVX-512),
    its fused conv + bias + relu kernel and its convolution gradients reject groups
    ("Fused conv implementation does not support grouped convolutions", "filter_size does not
    have enough elements"). There the stacked convolutions are batched matmuls instead
    (`_conv_as_matmul`)."""
    x = tf.ones([1, 3, 3, 2])
    kernel = tf.Variable(tf.ones([1, 1, 1, 2]))
    bias = tf.Variable(tf.zeros([2]))

    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(
                tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias))
            )
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, [kernel, bias])])

    if not tf.executing_eagerly():  # inside a trace it would only add ops, never fail
        raise RuntimeError("grouped_conv_trains() must be asked eagerly")
    try:
        tf.function(step, autograph=False)()  # in a graph: where the fused kernel is chosen
    except tf.errors.OpError as exc:
        logging.getLogger("lrsearch.population").info(
            "grouped convolutions do not train here (%s): stacked convolutions are matmuls",
            str(exc).splitlines()[0][:200],
        )
        return False
    return True


def member_losses(
    out: tf.Tensor, y: tf.Tensor, classification: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per member and example: (loss, compiled metric) as Keras computes them for one solo
    model: sparse cross-entropy from the softmax's logits and accuracy, or MSE and MAE."""
    if classification:
        labels = tf.broadcast_to(tf.cast(y, tf.int64), tf.shape(out)[:2])
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=out)
        predicted = tf.argmax(tf.nn.softmax(out), axis=-1)
        hit = tf.cast(tf.equal(labels, predicted), tf.float32)
        return loss, hit
    target = tf.reshape(tf.cast(y, out.dtype), [-1, int(out.shape[-1])])
    diff = target[tf.newaxis] - out
    return tf.reduce_mean(tf.square(diff), axis=-1), tf.reduce_mean(tf.abs(diff), axis=-1)


__all__ = ["Layer", "StackedNet", "describe", "member_losses"]
