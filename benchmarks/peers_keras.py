"""The Keras 3 peer of ``benchmarks/run.py`` (``keras-jax``): ``model.compile`` + ``model.fit`` on the JAX backend.

The models mirror dlfund's: LeCun-normal kernels and zero biases (Keras defaults to Glorot-uniform), Adam with
epsilon 1e-8 (Keras defaults to 1e-7), LayerNorm epsilon 1e-6, tanh-approximated GELU (jax.nn.gelu's default).
Keras jit-compiles the train step on JAX (``jit_compile="auto"``) and feeds NumPy batches itself.
``precision="bfloat16"`` sets Keras' "mixed_bfloat16" dtype policy (bfloat16 compute, float32 weights) with the
output layer in float32, as Keras' mixed-precision guide does.
"""

from __future__ import annotations

import os

# Keras 3 reads its backend at import; without it Keras tries TensorFlow, which is not installed.
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras

from benchmarks import workloads

INIT = "lecun_normal"


def gelu_tanh(x):
    return keras.activations.gelu(x, approximate=True)


def keras_model(task: str, shape: tuple[int, ...]) -> keras.Model:
    """The task's model under the current global dtype policy; the logits are float32 under any policy."""
    dense = dict(kernel_initializer=INIT)
    inputs = keras.Input(shape=shape)
    if task == "mlp":
        x = inputs
        for width in workloads.MLP_HIDDEN:
            x = keras.layers.Dense(width, activation="relu", **dense)(x)
    elif task == "cnn":
        x = inputs
        for channels in workloads.CNN_CHANNELS:
            x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", **dense)(x)
            x = keras.layers.MaxPooling2D(2)(x)
        x = keras.layers.Dense(workloads.CNN_DENSE, activation="relu", **dense)(keras.layers.Flatten()(x))
    elif task == "lstm":
        x = keras.layers.LSTM(workloads.LSTM_HIDDEN, unit_forget_bias=True, **dense)(inputs)
    else:
        t = workloads.TRANSFORMER
        eps = workloads.LAYER_NORM_EPSILON
        positions = workloads.sinusoidal_positions(shape[0], t["width"])
        x = keras.ops.add(keras.layers.Dense(t["width"], **dense)(inputs), positions)
        for _ in range(t["depth"]):
            h = keras.layers.LayerNormalization(epsilon=eps)(x)
            h = keras.layers.MultiHeadAttention(t["heads"], t["width"] // t["heads"], **dense)(h, h)
            x = keras.layers.Add()([x, h])
            h = keras.layers.LayerNormalization(epsilon=eps)(x)
            h = keras.layers.Dense(t["mlp"], activation=gelu_tanh, **dense)(h)
            x = keras.layers.Add()([x, keras.layers.Dense(t["width"], **dense)(h)])
        x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization(epsilon=eps)(x))
    outputs = keras.layers.Dense(workloads.NUM_CLASSES, dtype="float32", **dense)(x)
    return keras.Model(inputs, outputs)


def train_keras(task, train, epochs, seed, precision="float32"):
    x, y = train
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    model = keras_model(task, x.shape[1:])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=workloads.LEARNING_RATE, epsilon=1e-8),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=workloads.BATCH, epochs=epochs, shuffle=True, verbose=0)
    return history.history["loss"][-1], lambda xt: model.predict(xt, batch_size=1000, verbose=0)
