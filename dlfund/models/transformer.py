"""A Transformer encoder classifier for sequences, or for images cut into patches (a tiny ViT)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dlfund.models.base import Model, check_rate, check_size
from dlfund.models.blocks import (
    Dropout,
    MultiHeadSelfAttention,
    as_images,
    as_sequences,
    check_choice,
    check_image_input,
    check_sequence_input,
    check_shape,
    dropout_key,
    sequence_mask,
    sinusoidal_positions,
)


class EncoderBlock(nnx.Module):
    """A pre-norm encoder block: ``x + attention(LN(x))``, then ``x + MLP(LN(x))`` with a GELU MLP.

    Pre-norm (LayerNorm inside the residual branch) keeps the residual path an identity, so deep stacks train
    without learning-rate warmup tricks (Xiong et al. 2020).

    Call: ``block(x, key_mask, rngs)`` with x [B, T, width], key_mask [B, T] (True = real token) and a dropout key
    (or None) -> [B, T, width]. Dropout (if any) acts on each branch's output before it is added back.
    """

    def __init__(self, width: int, num_heads: int, mlp_width: int, dropout: float, *, rngs: nnx.Rngs):
        self.attention_norm = nnx.LayerNorm(width, rngs=rngs)
        self.attention = MultiHeadSelfAttention(width, num_heads, rngs=rngs)
        self.mlp_norm = nnx.LayerNorm(width, rngs=rngs)
        self.mlp_in = nnx.Linear(width, mlp_width, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_width, width, rngs=rngs)
        self.dropout = Dropout(dropout) if dropout > 0 else None

    def _drop(self, x: jax.Array, rngs: jax.Array | None, site: int) -> jax.Array:
        return x if self.dropout is None else self.dropout(x, rngs=dropout_key(rngs, site))

    def __call__(self, x: jax.Array, key_mask: jax.Array, rngs: jax.Array | None = None) -> jax.Array:
        x = x + self._drop(self.attention(self.attention_norm(x), key_mask), rngs, 0)
        mlp = self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x))))
        return x + self._drop(mlp, rngs, 1)


def patches(images: jax.Array, patch_size: int) -> jax.Array:
    """Cuts images [B, H, W, C] into non-overlapping p x p patches, row by row: [B, (H/p)*(W/p), p*p*C]."""
    b, h, w, c = images.shape
    p = patch_size
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def default_patch_size(height: int, width: int) -> int:
    """The patch size the registry uses for images: the largest of 4, 2 that divides both sides and still leaves
    at least 16 patches (fewer tokens leave attention little to mix), else 1 (one token per pixel)."""
    for p in (4, 2):
        if height % p == 0 and width % p == 0 and (height // p) * (width // p) >= 16:
            return p
    return 1


class Transformer(Model):
    """A Transformer encoder with a CLS-token or masked-mean-pool classification head.

    Tokens are linearly embedded to ``width``, get positional encodings, pass through ``depth`` pre-norm
    :class:`EncoderBlock` s and a final LayerNorm; the head reads the CLS token (a learned token prepended to every
    sequence) or the mean over the real tokens.

    Args:
      in_features: numbers per token: F for sequences [B, T, F]; p*p*C for images cut into p x p patches.
      num_classes: logits per example.
      width: token width (the model dimension), divisible by ``num_heads``.
      depth: encoder blocks.
      num_heads: attention heads; each attends in ``width // num_heads`` dimensions.
      mlp_ratio: the MLP's hidden width is ``round(mlp_ratio * width)``.
      dropout: rate of dropout on the embedded tokens and on each residual branch (training only), in [0, 1).
      max_len: longest sequence (tokens, not counting CLS): the size of the positional table.
      positions: "sinusoidal" (fixed sin/cos encodings) or "learned" (a [max_len, width] parameter).
      pool: "cls" (a learned CLS token) or "mean" (average of the real tokens' outputs).
      patch_size: with ``image_shape``: the side p of the square patches; must divide H and W.
      image_shape: (H, W, C): inputs are images [B, H, W, C] (or flat [B, H*W*C]) cut into (H/p)*(W/p) patches.
      rngs: ``nnx.Rngs`` for initialization.

    Call: ``model(x, mask=None, rngs=key)`` -> logits [B, num_classes]. x is [B, T, F] (T <= max_len) or, with
    ``image_shape``, images. ``mask`` [B, T] (sequences only) marks real tokens True and padding False; padding is
    masked out of attention and of the mean pool, so it changes neither the real tokens' outputs nor the logits.

    Raises:
      ValueError: width not divisible by num_heads, a patch size that does not divide the image, more patches
        than max_len, in_features other than p*p*C for images, or other bad arguments.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        width: int = 64,  # small enough for a CPU, wide enough for 4 heads of 16 dimensions
        depth: int = 2,  # two blocks: attention can compose (attend to what another token attended to)
        num_heads: int = 4,  # several attention patterns per block at 16 dimensions per head
        mlp_ratio: float = 2,  # half the usual 4 (where the MLP holds 2/3 of a block's weights): small data
        dropout: float = 0.0,  # off: small models on small data rarely need it; opt in for regularization
        max_len: int = 64,  # covers 8x8 patch grids (32x32 images, p=4) and short sequences
        positions: str = "sinusoidal",  # no parameters, and defined for every position up to max_len
        pool: str = "cls",  # the BERT/ViT convention
        patch_size: int | None = None,  # sequences by default; images need both patch_size and image_shape
        image_shape: tuple[int, int, int] | None = None,  # (H, W, C) with patch_size: a tiny ViT
        rngs: nnx.Rngs,
    ):
        self.in_features = check_size("in_features", in_features)
        self.num_classes = check_size("num_classes", num_classes)
        for name, value in (("width", width), ("depth", depth), ("num_heads", num_heads), ("max_len", max_len)):
            check_size(name, value)
        if width % num_heads:
            raise ValueError(
                f"width must be divisible by num_heads (each head gets width // num_heads dimensions): "
                f"width={width}, num_heads={num_heads}; e.g. width={num_heads * max(1, round(width / num_heads))}"
            )
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
        mlp_width = max(1, round(mlp_ratio * width))
        dropout = check_rate("dropout", dropout)
        check_choice("positions", positions, ("sinusoidal", "learned"))
        check_choice("pool", pool, ("cls", "mean"))
        if image_shape is not None or patch_size is not None:
            image_shape = self._check_patching(in_features, max_len, patch_size, image_shape)
        self.width, self.max_len, self.positions, self.pool = width, max_len, positions, pool
        self.patch_size, self.image_shape = patch_size, image_shape
        self._remember(
            in_features=in_features,
            num_classes=num_classes,
            width=width,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            max_len=max_len,
            positions=positions,
            pool=pool,
            patch_size=patch_size,
            image_shape=image_shape,
        )
        self.embed = nnx.Linear(in_features, width, rngs=rngs)
        # Small learned positions (ViT's 0.02), so that at the start they barely perturb the token embeddings.
        # (One assignment: NNX fixes an attribute as static or data when it is first set.)
        self.position_table = (
            nnx.Param(0.02 * jax.random.normal(rngs.params(), (max_len, width))) if positions == "learned" else None
        )
        self.cls_token = nnx.Param(jnp.zeros((1, 1, width))) if pool == "cls" else None
        self.blocks = nnx.List([EncoderBlock(width, num_heads, mlp_width, dropout, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, num_classes, rngs=rngs)
        self.dropout = Dropout(dropout) if dropout > 0 else None

    @staticmethod
    def _check_patching(in_features: int, max_len: int, patch_size, image_shape) -> tuple[int, int, int]:
        if image_shape is None or patch_size is None:
            raise ValueError(
                "patch embedding needs both image_shape=(H, W, C) and patch_size, got "
                f"image_shape={image_shape!r}, patch_size={patch_size!r}"
            )
        h, w, c = check_shape("image_shape", image_shape, 3)
        p = check_size("patch_size", patch_size)
        if h % p or w % p:
            raise ValueError(f"patch_size={p} must divide the image's height and width; image_shape={(h, w, c)}")
        tokens = (h // p) * (w // p)
        if in_features != p * p * c:
            raise ValueError(
                f"with image_shape={(h, w, c)} and patch_size={p}, each token is a flattened {p}x{p}x{c} patch: "
                f"in_features must be {p * p * c}, got {in_features}"
            )
        if tokens > max_len:
            raise ValueError(
                f"image_shape={(h, w, c)} with patch_size={p} gives {tokens} patches, more than max_len={max_len} "
                f"(the positional table's size); use max_len>={tokens} or a larger patch_size"
            )
        return (h, w, c)

    def check_input(self, example_shape: tuple[int, ...]) -> None:
        if self.image_shape is not None:
            check_image_input("Transformer", example_shape, self.image_shape)
        else:
            check_sequence_input("Transformer", example_shape, self.in_features, max_len=self.max_len)

    def _tokens(self, x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """Input tokens [B, T, in_features] and their mask [B, T]."""
        if self.image_shape is not None:
            if mask is not None:
                raise ValueError("mask applies to sequence inputs; this Transformer reads images (image_shape)")
            x = patches(as_images(x, self.image_shape), self.patch_size)
        else:
            x = as_sequences(x)
        if x.shape[1] > self.max_len:
            raise ValueError(
                f"the Transformer handles at most max_len={self.max_len} tokens (its positional table), but got "
                f"inputs of shape {x.shape}, i.e. {x.shape[1]} tokens"
            )
        return x, sequence_mask(mask, x)

    def _position_encodings(self, length: int) -> jax.Array:
        if self.position_table is not None:
            return self.position_table[:length]
        return jnp.asarray(sinusoidal_positions(length, self.width))

    def _drop(self, x: jax.Array, rngs: jax.Array | None) -> jax.Array:
        return x if self.dropout is None else self.dropout(x, rngs=dropout_key(rngs, 0))

    def encode(
        self, x: jax.Array, *, mask: jax.Array | None = None, rngs: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """The encoder's token states after the final LayerNorm, and their mask.

        Returns:
          ``(h, mask)``: h [B, T', width] and mask [B, T'] (True = real token), where T' = T + 1 with the CLS
          token first (``pool="cls"``), else T (T: tokens, i.e. time steps or patches).
        """
        tokens, mask = self._tokens(x, mask)
        h = self._drop(self.embed(tokens) + self._position_encodings(tokens.shape[1]), rngs)
        if self.cls_token is not None:
            cls = jnp.broadcast_to(self.cls_token[...], (h.shape[0], 1, h.shape[2]))
            h = jnp.concatenate([cls, h], axis=1)
            mask = jnp.concatenate([jnp.ones((h.shape[0], 1), bool), mask], axis=1)
        for i, block in enumerate(self.blocks):
            h = block(h, mask, dropout_key(rngs, i + 1))  # site 0 is the embedding dropout
        return self.norm(h), mask

    def penultimate(self, x: jax.Array, *, mask: jax.Array | None = None, rngs: jax.Array | None = None) -> jax.Array:
        """The pooled encoding [B, width] (the CLS token's state, or the mean over real tokens): the head's input."""
        h, mask = self.encode(x, mask=mask, rngs=rngs)
        if self.cls_token is not None:
            return h[:, 0]
        weights = mask[..., None].astype(h.dtype)
        return (h * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None, rngs: jax.Array | None = None) -> jax.Array:
        return self.head(self.penultimate(x, mask=mask, rngs=rngs))
