"""dlfund: the fundamentals of deep learning as fast, tested JAX software.

Five lines from data to a trained model::

    import dlfund
    from flax import nnx
    ds = dlfund.data.load("digits")
    model = dlfund.models.MLP(64, (128,), 10, rngs=nnx.Rngs(0))
    result = dlfund.fit(model, ds, epochs=30, batch_size=32)
    dlfund.evaluate(result.model, ds.test)
"""

from dlfund import activations, checkpoint, data, losses, metrics, models, optimizers, regularizers, weights
from dlfund.history import History
from dlfund.train import (
    Callback,
    EarlyStopping,
    FitResult,
    LambdaCallback,
    LivePlot,
    NonFiniteLossWarning,
    TrainState,
    create_train_state,
    eval_step,
    evaluate,
    fit,
    predict,
    train_step,
)
from dlfund.train.run import load_model
from dlfund.weights import load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "EarlyStopping",
    "FitResult",
    "History",
    "LambdaCallback",
    "LivePlot",
    "NonFiniteLossWarning",
    "TrainState",
    "__version__",
    "activations",
    "checkpoint",
    "create_train_state",
    "data",
    "eval_step",
    "evaluate",
    "fit",
    "load_model",
    "load_weights",
    "losses",
    "metrics",
    "models",
    "optimizers",
    "predict",
    "regularizers",
    "save_weights",
    "train_step",
    "weights",
]
