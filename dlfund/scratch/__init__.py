"""The mechanics of deep learning written out by hand: NumPy, no autodiff, no optax.

Every piece here is tested equal to the library path (``dlfund.models``, ``dlfund.losses``, ``jax.grad``,
``optax``, ``flax.nnx.BatchNorm``): read these to see what the library computes, and run them side by side.

- :mod:`~dlfund.scratch.activations`: sigmoid, tanh, relu, step, identity and their derivatives
- :mod:`~dlfund.scratch.neuron`: z = w . x + b, then an activation
- :mod:`~dlfund.scratch.perceptron`: Rosenblatt's learning rule
- :mod:`~dlfund.scratch.losses`: MSE and softmax cross-entropy with their gradients
- :mod:`~dlfund.scratch.dense`: a dense layer forward and backward (chain rule)
- :mod:`~dlfund.scratch.mlp`: a two-layer MLP, hand-written backprop, an SGD loop
- :mod:`~dlfund.scratch.optimizers`: SGD, momentum, RMSprop, Adam as ``init``/``update`` pairs (optax's conventions)
- :mod:`~dlfund.scratch.dropout`: inverted dropout forward and backward
- :mod:`~dlfund.scratch.batch_norm`: batch norm forward, backward and running statistics
- :mod:`~dlfund.scratch.plots`: activation curves and 2-D decision regions for the notebook
"""

from dlfund.scratch import plots
from dlfund.scratch.activations import ACTIVATIONS, activate, activation_grad, identity, relu, sigmoid, step, tanh
from dlfund.scratch.batch_norm import (
    BatchNormCache,
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_inference,
    update_running_stats,
)
from dlfund.scratch.dense import DenseGrads, dense_backward, dense_forward, dense_loss_and_grads
from dlfund.scratch.dropout import dropout_backward, dropout_forward, dropout_mask
from dlfund.scratch.losses import mse, softmax, softmax_cross_entropy
from dlfund.scratch.mlp import (
    MLPCache,
    init_mlp,
    mlp_backward,
    mlp_forward,
    mlp_loss_and_grads,
    params_from_mlp,
    train_mlp,
)
from dlfund.scratch.neuron import neuron, pre_activation
from dlfund.scratch.optimizers import Optimizer, adam, apply_updates, momentum, rmsprop, sgd
from dlfund.scratch.perceptron import (
    PerceptronResult,
    perceptron_order,
    perceptron_predict,
    perceptron_train,
    perceptron_update,
)
from dlfund.scratch.plots import activations_figure, plot_decision_regions

__all__ = [
    "ACTIVATIONS",
    "BatchNormCache",
    "DenseGrads",
    "MLPCache",
    "Optimizer",
    "PerceptronResult",
    "activate",
    "activation_grad",
    "activations_figure",
    "adam",
    "apply_updates",
    "batch_norm_backward",
    "batch_norm_forward",
    "batch_norm_inference",
    "dense_backward",
    "dense_forward",
    "dense_loss_and_grads",
    "dropout_backward",
    "dropout_forward",
    "dropout_mask",
    "identity",
    "init_mlp",
    "mlp_backward",
    "mlp_forward",
    "mlp_loss_and_grads",
    "momentum",
    "mse",
    "neuron",
    "params_from_mlp",
    "perceptron_order",
    "perceptron_predict",
    "perceptron_train",
    "perceptron_update",
    "plot_decision_regions",
    "plots",
    "pre_activation",
    "relu",
    "rmsprop",
    "sgd",
    "sigmoid",
    "softmax",
    "softmax_cross_entropy",
    "step",
    "tanh",
    "train_mlp",
    "update_running_stats",
]
