"""The small 4-class problem that the multi-device and multi-process test scripts train on, as script text (those
scripts run in fresh interpreters) that defines TRAIN, VAL and OPTIONS."""

import textwrap

BLOBS = textwrap.dedent(
    """
    import numpy as np
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(4, 12))
    labels = rng.integers(0, 4, size=400).astype(np.int32)
    inputs = (centers[labels] + rng.normal(size=(400, 12))).astype(np.float32)
    TRAIN, VAL = (inputs[:320], labels[:320]), (inputs[320:], labels[320:])
    OPTIONS = dict(epochs=3, batch_size=32, learning_rate=3e-3, validation_data=VAL, progress=False)
    """
)
