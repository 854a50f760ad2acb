"""The workloads of ``benchmarks/run.py``: tasks, synthetic data and analytic FLOP counts (NumPy only).

Every peer (dlfund, Flax, JAX, Keras, PyTorch) reads its task, data and hyperparameters from here, so that they
all train the same architecture on the same examples. Importing this module must stay cheap (no JAX, no torch):
the orchestrator and the tests import it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

TASKS = ("mlp", "cnn", "lstm", "transformer")
#: Image shape and split sizes per ``--data``: MNIST-shaped or CIFAR-10-shaped.
DATASETS = {
    "synth": {"image_shape": (28, 28, 1), "train": 60_000, "test": 10_000},
    "cifar": {"image_shape": (32, 32, 3), "train": 50_000, "test": 10_000},
}
NUM_CLASSES = 10
BATCH = 128
LEARNING_RATE = 1e-3  # Adam, every peer; epsilon 1e-8 (Optax's and PyTorch's default; Keras is told so)
#: ``--precision``: float32, or bfloat16 compute with float32 weights and optimizer state (every peer's usual
#: mixed-precision recipe: dlfund's precision="bfloat16", Flax layers' dtype, Keras' "mixed_bfloat16" policy,
#: PyTorch's autocast), for GPUs and TPUs; XLA:CPU has no bfloat16 units.
PRECISIONS = ("float32", "bfloat16")

MLP_HIDDEN = (512, 512)
CNN_CHANNELS = (32, 64)  # 3x3 SAME convs, each followed by ReLU and a 2x2 max pool
CNN_DENSE = 128
LSTM_HIDDEN = 128
# A 2-block pre-norm Transformer encoder (dlfund.models.Transformer): token width 64, 4 heads, GELU MLP 128,
# sinusoidal positions, final LayerNorm, mean pool over tokens, dense head.
TRANSFORMER = {"width": 64, "depth": 2, "heads": 4, "mlp": 128}
LAYER_NORM_EPSILON = 1e-6  # Flax's default; the Keras and PyTorch peers are given it

# Signal amplitude of the class prototypes relative to unit noise, per sqrt(feature): the nearest-prototype
# (Bayes) classifier then scores ~0.93 at any image size, so a peer that learns less shows it in test accuracy,
# and no peer can reach 1.0 by memorizing.
SIGNAL = 3.4
PROTOTYPE_BLOCK = 4  # pixels per side of a prototype's constant blocks (see synthetic_images)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return task


def input_shape(task: str, image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """One example's shape as the task's model reads it: a flat vector (mlp), an image (cnn), or a sequence of
    rows, H steps of W*C features (lstm, transformer)."""
    h, w, c = image_shape
    check_task(task)
    if task == "mlp":
        return (h * w * c,)
    if task == "cnn":
        return (h, w, c)
    return (h, w * c)


def synthetic_images(
    image_shape: tuple[int, int, int], n_train: int, n_test: int, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Learnable synthetic images [N, H, W, C] float32 with labels [N] int32: one prototype per class plus unit
    Gaussian noise, scaled to unit variance. The same seed gives the same arrays in every process.

    The prototypes are spatially smooth, like digits' strokes: random values on a grid of ``PROTOTYPE_BLOCK``-pixel
    blocks, each block one value (white-noise prototypes, one independent value per pixel, are invisible to a CNN
    whose 3x3 filters and max pools see a signal of 0.12 per pixel under noise of 1: it stayed at chance, 0.12,
    after 3 epochs, while an MLP, which can learn the matched filter, learned them)."""
    rng = np.random.default_rng(seed)
    dims = math.prod(image_shape)
    amplitude = SIGNAL / math.sqrt(dims)
    h, w, c = image_shape
    coarse = rng.normal(size=(NUM_CLASSES, -(-h // PROTOTYPE_BLOCK), -(-w // PROTOTYPE_BLOCK), c))
    blocks = coarse.repeat(PROTOTYPE_BLOCK, axis=1).repeat(PROTOTYPE_BLOCK, axis=2)[:, :h, :w]
    prototypes = blocks.reshape(NUM_CLASSES, dims).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=n_train + n_test).astype(np.int32)
    x = rng.normal(size=(n_train + n_test, dims)).astype(np.float32)
    x += amplitude * prototypes[y]
    x /= math.sqrt(1.0 + amplitude**2)
    x = x.reshape(-1, *image_shape)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def sinusoidal_positions(length: int, width: int) -> np.ndarray:
    """The fixed positional encodings every Transformer peer adds: [length, width] float32, sin on even and cos on
    odd features (as ``dlfund.models.blocks.sinusoidal_positions``, restated so peers need not import dlfund)."""
    t = np.arange(length, dtype=np.float64)[:, None]
    rates = 1.0 / 10000.0 ** (np.arange(0, width, 2, dtype=np.float64) / width)
    pe = np.zeros((length, width + width % 2))
    pe[:, 0::2] = np.sin(t * rates)
    pe[:, 1::2] = np.cos(t * rates)
    return pe[:, :width].astype(np.float32)


def forward_macs(task: str, image_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one example's forward pass, counting matmuls and convolutions only (biases,
    activations, pooling, softmax and normalization are a few percent at most and left out)."""
    h, w, c = image_shape
    check_task(task)
    if task == "mlp":
        widths = (h * w * c, *MLP_HIDDEN, NUM_CLASSES)
        return sum(a * b for a, b in itertools.pairwise(widths))
    if task == "cnn":
        macs, cin = 0, c
        for cout in CNN_CHANNELS:
            macs += h * w * 3 * 3 * cin * cout  # SAME, stride 1: one 3x3xCin dot product per output pixel
            h, w, cin = h // 2, w // 2, cout  # 2x2 max pool
        return macs + h * w * cin * CNN_DENSE + CNN_DENSE * NUM_CLASSES
    steps, features = h, w * c
    if task == "lstm":
        return steps * 4 * LSTM_HIDDEN * (features + LSTM_HIDDEN) + LSTM_HIDDEN * NUM_CLASSES
    d, mlp, t = TRANSFORMER["width"], TRANSFORMER["mlp"], steps
    block = 4 * t * d * d + 2 * t * t * d + 2 * t * d * mlp  # q, k, v, out; scores and weighted sum; MLP
    return t * features * d + TRANSFORMER["depth"] * block + d * NUM_CLASSES


def train_flops_per_example(task: str, image_shape: tuple[int, int, int]) -> int:
    """FLOPs of one training example: 2 FLOPs per multiply-accumulate, times 3 for forward + backward (the
    gradients with respect to activations and to weights each cost about one forward pass): the usual
    "6 x parameters" of a dense network. Slight overcount: nobody needs the input's gradient."""
    return 6 * forward_macs(task, image_shape)
