"""A small CIFAR-style residual network (He et al. 2016, section 4.2) with basic blocks."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from dlfund.models import conv_ops
from dlfund.models.base import Model, check_size
from dlfund.models.blocks import as_images, check_image_input, check_shape


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, rngs: nnx.Rngs) -> tuple[nnx.Conv, nnx.BatchNorm]:
    # No conv bias: the BatchNorm right after it has its own shift.
    conv = nnx.Conv(
        cin, cout, (kernel, kernel), strides=(stride, stride), padding="SAME", use_bias=False,
        conv_general_dilated=conv_ops.conv_general_dilated, rngs=rngs,
    )  # fmt: skip
    return conv, nnx.BatchNorm(cout, rngs=rngs)


class BasicBlock(nnx.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus the shortcut, then ReLU.

    The shortcut is the identity when shape is kept, else a 1x1 conv (with ``stride``) and BN that projects the
    input to the new channels and size.

    Call: x [B, H, W, cin] -> [B, ceil(H / stride), ceil(W / stride), cout].
    """

    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride, rngs)
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3, 1, rngs)
        projects = stride != 1 or cin != cout
        self.proj, self.proj_bn = _conv_bn(cin, cout, 1, stride, rngs) if projects else (None, None)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.proj is None else self.proj_bn(self.proj(x))
        return jax.nn.relu(y + shortcut)


class ResNet(Model):
    """A CIFAR-style ResNet: 3x3 stem conv-BN-ReLU, stages of basic blocks, global average pool, dense head.

    The first block of every stage after the first halves the height and width (stride 2) and changes the channels
    through a 1x1 projection shortcut; all other shortcuts are identities.

    Args:
      input_shape: (H, W, C) of one image; flat inputs [B, H*W*C] are reshaped to it. Images of another height and
        width (same channels) also work, since the head sees globally pooled features.
      stage_channels: channels of each stage (the stem has the first stage's channels).
      blocks_per_stage: basic blocks in each stage (same length as ``stage_channels``).
      num_classes: logits per example.
      rngs: ``nnx.Rngs`` for initialization.

    Call: ``model(x)`` with x [B, H, W, C] or [B, H*W*C] -> logits [B, num_classes]. BatchNorm uses batch
    statistics in training (``model.train()``) and running averages in evaluation (``model.eval()``).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (32, 32, 3),  # CIFAR-10 images
        stage_channels: Sequence[int] = (16, 32, 64),  # He et al.'s CIFAR ResNets: doubling per stage from 16
        blocks_per_stage: Sequence[int] = (2, 2, 2),  # 2 blocks per stage: ResNet-14, small enough for a CPU
        num_classes: int = 10,  # CIFAR-10
        *,
        rngs: nnx.Rngs,
    ):
        input_shape = check_shape("input_shape", input_shape, 3)
        stage_channels, blocks_per_stage = tuple(stage_channels), tuple(blocks_per_stage)
        if not stage_channels or len(stage_channels) != len(blocks_per_stage):
            raise ValueError(
                "stage_channels and blocks_per_stage need one entry per stage (at least one stage), got "
                f"stage_channels={stage_channels} and blocks_per_stage={blocks_per_stage}"
            )
        for i, (c, n) in enumerate(zip(stage_channels, blocks_per_stage)):
            check_size(f"stage_channels[{i}]", c)
            check_size(f"blocks_per_stage[{i}]", n)
        self.num_classes = check_size("num_classes", num_classes)
        self.input_shape = input_shape
        self._remember(
            input_shape=input_shape,
            stage_channels=stage_channels,
            blocks_per_stage=blocks_per_stage,
            num_classes=num_classes,
        )
        self.stem, self.stem_bn = _conv_bn(input_shape[2], stage_channels[0], 3, 1, rngs)
        blocks, cin = [], stage_channels[0]
        for stage, (cout, n) in enumerate(zip(stage_channels, blocks_per_stage)):
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1, rngs=rngs))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(cin, num_classes, rngs=rngs)

    def check_input(self, example_shape: tuple[int, ...]) -> None:
        check_image_input("ResNet", example_shape, self.input_shape, any_size=True)

    def penultimate(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        """The last stage's feature maps, globally average-pooled: [B, stage_channels[-1]] (the head's input)."""
        x = jax.nn.relu(self.stem_bn(self.stem(as_images(x, self.input_shape))))
        for block in self.blocks:
            x = block(x)
        return x.mean(axis=(1, 2))

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        return self.head(self.penultimate(x, rngs=rngs))
