"""Training: the state, the compiled steps, the epoch strategies, and the ``fit`` loop on top of them."""

from dlfund.train.callbacks import Callback, LambdaCallback, LivePlot
from dlfund.train.early_stopping import EarlyStopping, EarlyStoppingState
from dlfund.train.ensemble import Ensemble, ensemble_predict
from dlfund.train.evaluation import evaluate, evaluate_arrays, predict, predict_classes
from dlfund.train.execution import EpochResult, choose_strategy, loop_epoch, scan_epoch
from dlfund.train.fit import FitResult, NonFiniteLossWarning, TrainingInterrupted, fit
from dlfund.train.members import SWEEPABLE, grid
from dlfund.train.options import FitConfig
from dlfund.train.state import Objective, TrainState, create_train_state
from dlfund.train.step import StepOutputs, eval_step, train_step, train_step_with_outputs
from dlfund.train.sweep_result import SweepResult
from dlfund.train.sweeps import sweep

__all__ = [
    "SWEEPABLE",
    "Callback",
    "EarlyStopping",
    "EarlyStoppingState",
    "Ensemble",
    "EpochResult",
    "FitConfig",
    "FitResult",
    "LambdaCallback",
    "LivePlot",
    "NonFiniteLossWarning",
    "Objective",
    "StepOutputs",
    "SweepResult",
    "TrainState",
    "TrainingInterrupted",
    "choose_strategy",
    "create_train_state",
    "ensemble_predict",
    "eval_step",
    "evaluate",
    "evaluate_arrays",
    "fit",
    "grid",
    "loop_epoch",
    "predict",
    "predict_classes",
    "scan_epoch",
    "sweep",
    "train_step",
    "train_step_with_outputs",
]
