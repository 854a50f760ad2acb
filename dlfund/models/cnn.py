"""The convolutional network: conv blocks (conv -> [BN] -> activation -> pool), then a dense head."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax
from flax import nnx

from dlfund import activations
from dlfund.models import conv_ops
from dlfund.models.base import Model, check_rate, check_size
from dlfund.models.blocks import (
    Dropout,
    as_images,
    check_choice,
    check_image_input,
    check_shape,
    dropout_key,
    per_block,
)

_POOLINGS = ("max", "avg")  # non-overlapping windows (stride = window): conv_ops.pool


def _conv_size(size: int, kernel: int, stride: int, padding: str) -> int:
    # XLA's rules: SAME keeps ceil(size / stride) positions, VALID only those where the whole kernel fits.
    return -(-size // stride) if padding == "SAME" else (size - kernel) // stride + 1


def feature_map_size(
    image_hw: tuple[int, int],
    kernel_sizes: Sequence[int],
    strides: Sequence[int],
    pools: Sequence[int],
    padding: str,
) -> tuple[int, int]:
    """The (height, width) of the last conv block's output for images of ``image_hw``.

    Raises:
      ValueError: a kernel or pooling window is larger than the map it slides over (after the earlier blocks
        shrank it); the message names the block, the window and the map size.
    """
    h, w = image_hw
    for i, (k, s, p) in enumerate(zip(kernel_sizes, strides, pools)):
        # Also with SAME padding: a kernel wider than the map mostly multiplies the zero padding.
        if k > min(h, w):
            raise ValueError(
                f"CNN conv block {i + 1} has a {k}x{k} kernel, larger than its {h}x{w} input map (images of "
                f"{image_hw[0]}x{image_hw[1]} after the earlier blocks); expected a kernel of at most "
                f"{min(h, w)}x{min(h, w)} here: use a smaller kernel_size, less pooling or fewer blocks"
            )
        h, w = _conv_size(h, k, s, padding), _conv_size(w, k, s, padding)
        if p > min(h, w):
            raise ValueError(
                f"CNN conv block {i + 1} pools over {p}x{p} windows, larger than its {h}x{w} feature map (images of "
                f"{image_hw[0]}x{image_hw[1]} after the earlier blocks); expected a pool of at most "
                f"{min(h, w)}x{min(h, w)} here: use a smaller pool, strides or fewer blocks"
            )
        h, w = h // p, w // p
    return h, w


class CNN(Model):
    """A convolutional classifier for NHWC images.

    Each conv block is conv -> [BatchNorm] -> activation -> [pool]; the last block's output is flattened (or
    averaged over space with ``global_pool``) and fed to a dense head: [dropout] -> dense -> activation, per hidden
    width, then [dropout] -> dense to the logits.

    Args:
      input_shape: (H, W, C) of one image. Flat inputs [B, H*W*C] are reshaped to it.
      channels: output channels of each conv block, e.g. ``(32, 64)``; at least one block.
      kernel_size: square kernel size, one int for all blocks or one per block.
      pool: pooling window (and stride), one for all blocks or one per block; 1 or None: no pooling.
      dense: widths of the hidden dense layers of the head; ``()``: logits straight from the features.
      num_classes: logits per example.
      activation: a name from ``dlfund.activations`` or a callable; used after every conv and hidden dense layer.
      batch_norm: BatchNorm after each conv (batch statistics in training, running averages in evaluation); the
        convs then have no bias, since BN's shift replaces it. The dense head has no BN.
      dropout: rate of dropout on the input of each dense layer of the head (training only), in [0, 1).
      strides: conv strides, one for all blocks or one per block.
      padding: "SAME" (the map keeps ceil(size / stride) positions) or "VALID" (no padding).
      pooling: "max" or "avg".
      global_pool: average each channel over space instead of flattening: far fewer head parameters, and images
        of another height and width are accepted.
      rngs: ``nnx.Rngs`` for initialization.

    Call: ``model(x, rngs=key)`` with x [B, H, W, C] or [B, H*W*C] -> logits [B, num_classes]; ``rngs`` is the
    dropout key (training).

    Raises:
      ValueError: bad arguments, or a kernel/pool larger than the feature map it reaches (see
        :func:`feature_map_size`).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (28, 28, 1),  # MNIST-sized grayscale images, the benchmark
        channels: Sequence[int] = (32, 64),  # the classic two-block MNIST convnet
        kernel_size: int | Sequence[int] = 3,  # the smallest kernel with a centre; stacking widens the view
        pool: int | Sequence[int | None] | None = 2,  # halves each side per block: cheaper, more translation slack
        dense: Sequence[int] = (128,),  # one hidden layer, as in the classic MNIST convnet
        num_classes: int = 10,  # digits
        *,
        activation: str | activations.Activation = "relu",  # no saturation: deep conv stacks train fast
        batch_norm: bool = False,  # off: the two-block default trains well without it
        dropout: float = 0.0,  # off: tiny models on small data rarely need it; opt in for regularization
        strides: int | Sequence[int] = 1,  # pooling does the downsampling by default
        padding: str = "SAME",  # keeps the map size, so only pooling shrinks it
        pooling: str = "max",  # keeps the strongest response of each window, the usual choice
        global_pool: bool = False,  # flatten by default: keeps where features are, as small MNIST nets do
        rngs: nnx.Rngs,
    ):
        input_shape = check_shape("input_shape", input_shape, 3)
        channels = (channels,) if isinstance(channels, int) else tuple(channels)
        if not channels:
            raise ValueError("CNN needs at least one conv block: channels=() (use an MLP for no convolutions)")
        for i, c in enumerate(channels):
            check_size(f"channels[{i}]", c)
        blocks = len(channels)
        kernel_sizes = per_block("kernel_size", kernel_size, blocks)
        strides = per_block("strides", strides, blocks)
        pools = tuple(1 if p is None else p for p in per_block("pool", pool, blocks, allow_none=True))
        dense = (dense,) if isinstance(dense, int) else tuple(dense)
        for i, width in enumerate(dense):
            check_size(f"dense[{i}]", width)
        self.num_classes = check_size("num_classes", num_classes)
        self.activation = activations.get(activation)  # fails now, listing known names, if misspelt
        dropout = check_rate("dropout", dropout)
        if not isinstance(padding, str) or padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
        padding = padding.upper()
        check_choice("pooling", pooling, _POOLINGS)
        self.input_shape, self.kernel_sizes, self.strides, self.pools = input_shape, kernel_sizes, strides, pools
        self.padding, self.pooling, self.global_pool = padding, pooling, bool(global_pool)
        h, w = self._feature_map(input_shape[:2])
        self._remember(
            input_shape=input_shape,
            channels=channels,
            kernel_size=kernel_sizes,
            pool=pools,
            dense=dense,
            num_classes=num_classes,
            activation=activation if isinstance(activation, str) else None,
            batch_norm=bool(batch_norm),
            dropout=dropout,
            strides=strides,
            padding=padding,
            pooling=pooling,
            global_pool=self.global_pool,
        )
        self.convs = nnx.List(
            [
                nnx.Conv(
                    cin,
                    cout,
                    (k, k),
                    strides=(s, s),
                    padding=padding,
                    use_bias=not batch_norm,
                    conv_general_dilated=conv_ops.conv_general_dilated,  # faster kernel gradient on CPU
                    rngs=rngs,
                )
                for cin, cout, k, s in zip((input_shape[2], *channels), channels, kernel_sizes, strides)
            ]
        )
        self.norms = nnx.List([nnx.BatchNorm(c, rngs=rngs) for c in channels] if batch_norm else [])
        features = channels[-1] if self.global_pool else h * w * channels[-1]
        widths = (features, *dense)
        self.dense = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(widths)])
        self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)
        self.dropout = Dropout(dropout) if dropout > 0 else None

    def _feature_map(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        return feature_map_size(image_hw, self.kernel_sizes, self.strides, self.pools, self.padding)

    def check_input(self, example_shape: tuple[int, ...]) -> None:
        check_image_input("CNN", example_shape, self.input_shape, any_size=self.global_pool)
        if len(example_shape) == 3:
            self._feature_map(tuple(example_shape[:2]))

    def features(self, x: jax.Array) -> jax.Array:
        """The conv blocks' output, flattened or globally pooled: [B, features]."""
        x = as_images(x, self.input_shape)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = self.norms[i](x)
            x = self.activation(x)
            if self.pools[i] > 1:
                p = self.pools[i]
                x = conv_ops.pool(x, p, self.pooling)
        return x.mean(axis=(1, 2)) if self.global_pool else x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def _drop(self, x: jax.Array, rngs: jax.Array | None, site: int) -> jax.Array:
        return x if self.dropout is None else self.dropout(x, rngs=dropout_key(rngs, site))

    def penultimate(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        """The head's input [B, F]: the last dense layer's activations (:meth:`features` without dense layers)."""
        x = self.features(x)
        for i, dense in enumerate(self.dense):
            x = self.activation(dense(self._drop(x, rngs, i)))
        return x

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        return self.head(self._drop(self.penultimate(x, rngs=rngs), rngs, len(self.dense)))
