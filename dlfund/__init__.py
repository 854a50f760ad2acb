"""dlfund: the fundamentals of deep learning as fast, tested JAX software.

Five lines from data to a trained model::

    import dlfund
    from flax import nnx
    ds = dlfund.data.load("digits")
    model = dlfund.models.MLP(64, (128,), 10, rngs=nnx.Rngs(0))
    result = dlfund.fit(model, ds, epochs=30, batch_size=32)
    dlfund.evaluate(result.model, ds.test)
"""

from dlfund import (
    activations,
    checkpoint,
    data,
    distributed,
    losses,
    metrics,
    models,
    optimizers,
    regularizers,
    scratch,
    transfer,
    weights,
)
from dlfund._version import __version__
from dlfund.env import env_report
from dlfund.history import History
from dlfund.model_summary import Summary, summary
from dlfund.plotting import plot_confusion_matrix, plot_precision_recall_curve, plot_roc_curve
from dlfund.train import (
    Callback,
    EarlyStopping,
    Ensemble,
    FitConfig,
    FitResult,
    LambdaCallback,
    LivePlot,
    NonFiniteLossWarning,
    SweepResult,
    TrainingInterrupted,
    TrainState,
    create_train_state,
    ensemble_predict,
    eval_step,
    evaluate,
    fit,
    grid,
    predict,
    predict_classes,
    sweep,
    train_step,
)
from dlfund.train.checks import DataWarning
from dlfund.train.compiles import RecompileWarning
from dlfund.train.freezing import param_paths
from dlfund.train.run import load_model
from dlfund.train.saved_run import Run, load_run
from dlfund.weights import load_weights, save_weights

__all__ = [
    "Callback",
    "DataWarning",
    "EarlyStopping",
    "Ensemble",
    "FitConfig",
    "FitResult",
    "History",
    "LambdaCallback",
    "LivePlot",
    "NonFiniteLossWarning",
    "RecompileWarning",
    "Run",
    "Summary",
    "SweepResult",
    "TrainState",
    "TrainingInterrupted",
    "__version__",
    "activations",
    "checkpoint",
    "create_train_state",
    "data",
    "distributed",
    "ensemble_predict",
    "env_report",
    "eval_step",
    "evaluate",
    "fit",
    "grid",
    "load_model",
    "load_run",
    "load_weights",
    "losses",
    "metrics",
    "models",
    "optimizers",
    "param_paths",
    "plot_confusion_matrix",
    "plot_precision_recall_curve",
    "plot_roc_curve",
    "predict",
    "predict_classes",
    "regularizers",
    "save_weights",
    "scratch",
    "summary",
    "sweep",
    "train_step",
    "transfer",
    "weights",
]
