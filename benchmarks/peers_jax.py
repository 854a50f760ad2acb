"""The JAX peers of ``benchmarks/run.py``: dlfund.fit and three hand-written Flax/JAX loops.

  dlfund:       ``dlfund.fit(model, (x, y), epochs=..., batch_size=128, progress=False)`` with a dlfund.models model.
  flax-nnx-jit: the Flax MNIST example's style: ``nnx.Optimizer``, one ``nnx.jit`` train step per batch, NumPy
                batches from a shuffled host array.
  jax-jit:      ``nnx.split`` once; a ``jax.jit`` pure step per batch (``nnx.merge`` inside), state donated.
  jax-scan:     the best hand-written loop we know: pure functions, the whole epoch in one ``lax.scan`` over
                data on the device (shuffled there), state donated, one read-back per epoch for the loss.

The three hand-written peers share plain Flax NNX mirrors of dlfund's models (same layers, Flax's default
initializers: LeCun-normal kernels, zero biases; the LSTM's forget-gate bias starts at 1 as in dlfund). With
``precision="bfloat16"`` their layers compute in bfloat16 (Flax's ``dtype``; weights and Adam state stay float32,
the loss is taken in float32), and dlfund gets ``fit(..., precision="bfloat16")``. The jitted functions live at
module level, so that the second (warm) call reuses the first call's compiled programs, as a notebook user's second
run would.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import workloads

LR = workloads.LEARNING_RATE
BATCH = workloads.BATCH
TX = optax.adam(LR)


# --- Flax NNX mirrors of dlfund's models ---------------------------------------------------------------------


class FlaxMLP(nnx.Module):
    def __init__(self, in_features: int, rngs: nnx.Rngs, dtype=None):
        widths = (in_features, *workloads.MLP_HIDDEN, workloads.NUM_CLASSES)
        self.layers = nnx.List([nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in itertools.pairwise(widths)])

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


class FlaxCNN(nnx.Module):
    def __init__(self, image_shape: tuple[int, int, int], rngs: nnx.Rngs, dtype=None):
        h, w, c = image_shape
        c1, c2 = workloads.CNN_CHANNELS
        self.conv1 = nnx.Conv(c, c1, (3, 3), padding="SAME", dtype=dtype, rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (3, 3), padding="SAME", dtype=dtype, rngs=rngs)
        self.dense = nnx.Linear((h // 4) * (w // 4) * c2, workloads.CNN_DENSE, dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(workloads.CNN_DENSE, workloads.NUM_CLASSES, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(jax.nn.relu(self.conv1(x)), (2, 2), (2, 2))
        x = nnx.max_pool(jax.nn.relu(self.conv2(x)), (2, 2), (2, 2))
        return self.head(jax.nn.relu(self.dense(x.reshape(x.shape[0], -1))))


def forget_bias_one(key, shape, dtype=jnp.float32):
    # OptimizedLSTMCell's gates are [i, f, g, o]: start the forget gate open (as dlfund's LSTM and Keras do).
    h = shape[0] // 4
    return jnp.zeros(shape, dtype).at[h : 2 * h].set(1.0)


class FlaxLSTM(nnx.Module):
    def __init__(self, features: int, rngs: nnx.Rngs, dtype=None):
        self.cell = nnx.OptimizedLSTMCell(
            features, workloads.LSTM_HIDDEN, bias_init=forget_bias_one, dtype=dtype, rngs=rngs
        )
        self.head = nnx.Linear(workloads.LSTM_HIDDEN, workloads.NUM_CLASSES, dtype=dtype, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x):  # x [B, T, F]
        zeros = jnp.zeros((x.shape[0], workloads.LSTM_HIDDEN), self.dtype or x.dtype)
        (_, h), _ = jax.lax.scan(lambda carry, x_t: self.cell(carry, x_t), (zeros, zeros), jnp.swapaxes(x, 0, 1))
        return self.head(h)


class FlaxEncoderBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, dtype=None):
        d, heads, mlp = workloads.TRANSFORMER["width"], workloads.TRANSFORMER["heads"], workloads.TRANSFORMER["mlp"]
        eps = workloads.LAYER_NORM_EPSILON
        self.norm1 = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(heads, d, decode=False, keep_rngs=False, dtype=dtype, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)
        self.mlp_in = nnx.Linear(d, mlp, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp, d, dtype=dtype, rngs=rngs)

    def __call__(self, x):  # pre-norm, as dlfund's EncoderBlock
        x = x + self.attention(self.norm1(x))
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x))))


class FlaxTransformer(nnx.Module):
    def __init__(self, features: int, rngs: nnx.Rngs, dtype=None):
        d = workloads.TRANSFORMER["width"]
        self.embed = nnx.Linear(features, d, dtype=dtype, rngs=rngs)
        self.blocks = nnx.List([FlaxEncoderBlock(rngs, dtype) for _ in range(workloads.TRANSFORMER["depth"])])
        self.norm = nnx.LayerNorm(d, epsilon=workloads.LAYER_NORM_EPSILON, dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(d, workloads.NUM_CLASSES, dtype=dtype, rngs=rngs)

    def __call__(self, x):  # x [B, T, F]
        h = self.embed(x)
        # NumPy: under jit the encodings are a constant of the program, not a parameter (as in dlfund)
        h = h + workloads.sinusoidal_positions(x.shape[1], self.embed.out_features).astype(h.dtype)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(axis=1))


def flax_model(task: str, shape: tuple[int, ...], seed: int, precision: str = "float32") -> nnx.Module:
    """The task's Flax model; its layers compute in ``precision`` (parameters are float32 either way)."""
    rngs = nnx.Rngs(seed)
    dtype = None if precision == "float32" else jnp.dtype(precision)  # None: Flax's default, the inputs' dtype
    if task == "mlp":
        return FlaxMLP(shape[0], rngs, dtype)
    if task == "cnn":
        return FlaxCNN(shape, rngs, dtype)
    if task == "lstm":
        return FlaxLSTM(shape[1], rngs, dtype)
    return FlaxTransformer(shape[1], rngs, dtype)


def xent(logits, y):
    # float32 logits: a bfloat16 softmax would round the loss (mixed precision keeps the loss in float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean()


# --- dlfund ----------------------------------------------------------------------------------------------------


def dlfund_model(task: str, shape: tuple[int, ...], seed: int):
    import dlfund

    rngs = nnx.Rngs(seed)
    classes = workloads.NUM_CLASSES
    if task == "mlp":
        return dlfund.models.MLP(shape[0], workloads.MLP_HIDDEN, classes, rngs=rngs)
    if task == "cnn":
        return dlfund.models.CNN(
            shape, channels=workloads.CNN_CHANNELS, kernel_size=3, pool=2, dense=(workloads.CNN_DENSE,), rngs=rngs
        )
    if task == "lstm":
        return dlfund.models.LSTM(shape[1], workloads.LSTM_HIDDEN, classes, rngs=rngs)
    t = workloads.TRANSFORMER
    return dlfund.models.Transformer(
        shape[1],
        classes,
        width=t["width"],
        depth=t["depth"],
        num_heads=t["heads"],
        mlp_ratio=t["mlp"] / t["width"],
        max_len=shape[0],
        pool="mean",
        rngs=rngs,
    )


def train_dlfund(task, train, epochs, seed, precision="float32", execution="auto"):
    import dlfund

    model = dlfund_model(task, train[0].shape[1:], seed)
    # The call a user writes (default metrics: training accuracy is computed too; the other peers skip it).
    result = dlfund.fit(
        model, train, optimizer="adam", learning_rate=LR, epochs=epochs, batch_size=BATCH, seed=seed, progress=False,
        execution=execution, precision=precision,
    )  # fmt: skip
    notes = [f"execution={result.execution}"]
    return result.history.last()["loss"], functools.partial(dlfund.predict, result.model), notes


train_dlfund_scan = functools.partial(train_dlfund, execution="scan")
train_dlfund_chunk = functools.partial(train_dlfund, execution="chunk")
train_dlfund_loop = functools.partial(train_dlfund, execution="loop")


# --- flax-nnx-jit: nnx.jit per batch ------------------------------------------------------------------------


@nnx.jit
def nnx_train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: xent(m(x), y))(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def nnx_predict(model, x):
    return model(x).astype(jnp.float32)


def train_flax_nnx_jit(task, train, epochs, seed, precision="float32"):
    x, y = train
    model = flax_model(task, x.shape[1:], seed, precision)
    optimizer = nnx.Optimizer(model, TX, wrt=nnx.Param)
    rng = np.random.default_rng(seed)
    steps = len(x) // BATCH
    for _ in range(epochs):
        order = rng.permutation(len(x))
        losses = []  # device arrays: no read-back per step
        for i in range(steps):
            idx = order[i * BATCH : (i + 1) * BATCH]
            losses.append(nnx_train_step(model, optimizer, x[idx], y[idx]))
    final_loss = float(jnp.mean(jnp.stack(losses)))
    return final_loss, lambda xt: np.asarray(nnx_predict(model, xt))


# --- jax-jit: split once, pure jax.jit step per batch ----------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def jit_step(graphdef, params, opt_state, rest, x, y):
    def loss_fn(p):
        return xent(nnx.merge(graphdef, p, rest)(x), y)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = TX.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@functools.partial(jax.jit, static_argnums=0)
def pure_predict(graphdef, params, rest, x):
    return nnx.merge(graphdef, params, rest)(x).astype(jnp.float32)


def train_jax_jit(task, train, epochs, seed, precision="float32"):
    x, y = train
    graphdef, params, rest = nnx.split(flax_model(task, x.shape[1:], seed, precision), nnx.Param, ...)
    opt_state = TX.init(params)
    rng = np.random.default_rng(seed)
    steps = len(x) // BATCH
    for _ in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for i in range(steps):
            idx = order[i * BATCH : (i + 1) * BATCH]
            params, opt_state, loss = jit_step(graphdef, params, opt_state, rest, x[idx], y[idx])
            losses.append(loss)
    final_loss = float(jnp.mean(jnp.stack(losses)))
    return final_loss, lambda xt: np.asarray(pure_predict(graphdef, params, rest, xt))


# --- jax-scan: the whole epoch in one lax.scan ---------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def scan_epoch(graphdef, params, opt_state, rest, x, y, key):
    steps = x.shape[0] // BATCH
    order = jax.random.permutation(key, x.shape[0])[: steps * BATCH].reshape(steps, BATCH)

    def step(carry, idx):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(lambda p: xent(nnx.merge(graphdef, p, rest)(x[idx]), y[idx]))(params)
        updates, opt_state = TX.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
    return params, opt_state, losses.mean()


def train_jax_scan(task, train, epochs, seed, precision="float32"):
    graphdef, params, rest = nnx.split(flax_model(task, train[0].shape[1:], seed, precision), nnx.Param, ...)
    opt_state = TX.init(params)
    x, y = jax.device_put(train[0]), jax.device_put(train[1])
    key = jax.random.key(seed)
    for epoch in range(epochs):
        params, opt_state, loss = scan_epoch(graphdef, params, opt_state, rest, x, y, jax.random.fold_in(key, epoch))
    return float(loss), lambda xt: np.asarray(pure_predict(graphdef, params, rest, xt))
