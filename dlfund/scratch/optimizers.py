"""SGD, momentum, RMSprop and Adam written out, as pure ``init``/``update`` pairs with optax's exact conventions.

Each optimizer is an :class:`Optimizer` (init, update), used like an optax ``GradientTransformation``:

    state = opt.init(params)
    updates, state = opt.update(grads, state)      # updates already include the minus sign and the learning rate
    params = apply_updates(params, updates)         # p + u

``params`` and ``grads`` may be single arrays or any pytree of arrays (dicts, lists, ...). Nothing is modified in
place. The conventions that decide whether a from-scratch version matches a library (with g the gradient, t the
step counted from 1):

- momentum: undamped heavy ball, v <- beta v + g, update -lr v (``optax.sgd(lr, momentum=beta)``). The damped
  form v <- beta v + (1 - beta) g takes steps (1 - beta) times smaller: 0.1x at beta = 0.9.
- RMSprop: nu <- decay nu + (1 - decay) g^2 from nu = 0 (optax's ``initial_scale=0``), update
  -lr g / sqrt(nu + eps), eps *inside* the square root (optax's default ``eps_in_sqrt=True``);
  ``eps_in_sqrt=False`` gives PyTorch's g / (sqrt(nu) + eps). No bias correction: the first step is
  g / sqrt(0.1 g^2) ~ 3.2 sign(g) at decay 0.9, larger than Adam's.
- Adam: m <- b1 m + (1 - b1) g, nu <- b2 nu + (1 - b2) g^2, m_hat = m / (1 - b1^t), nu_hat = nu / (1 - b2^t),
  update -lr m_hat / (sqrt(nu_hat) + eps) (eps outside the root, as ``optax.adam``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax  # for jax.tree.map only (walking pytrees of arrays); no autodiff anywhere here
import numpy as np

from dlfund.scratch._checks import check_positive, check_rate, check_same_shapes

PyTree = Any


class Optimizer(NamedTuple):
    """A pure optimizer: ``init(params) -> state``; ``update(grads, state) -> (updates, state)``."""

    init: Callable[[PyTree], Any]
    update: Callable[[PyTree, Any], tuple[PyTree, Any]]


class MomentumState(NamedTuple):
    velocity: PyTree  #: v, like the params


class RMSpropState(NamedTuple):
    nu: PyTree  #: running mean of g^2


class AdamState(NamedTuple):
    count: int  #: steps taken so far (t - 1 during step t)
    mu: PyTree  #: running mean of g (first moment)
    nu: PyTree  #: running mean of g^2 (second moment)


def _map(fn: Callable[..., np.ndarray], *trees: PyTree) -> PyTree:
    return jax.tree.map(fn, *trees)


def _zeros(params: PyTree) -> PyTree:
    return _map(lambda p: np.zeros(np.shape(p), np.result_type(p)), params)


def _dtype_scalar(value: float, like: np.ndarray) -> np.ndarray:
    # Hyperparameters in the gradient's own dtype (float32), cast where optax casts them: 1 - b2 is formed in
    # Python (float64) and then rounded, while the bias correction 1 - b2**t uses float32(b2). The two orders
    # differ by 1.3e-5 relative at b2 = 0.999, more than the 1e-5 this module is tested to.
    return np.asarray(value, np.result_type(like))


def apply_updates(params: PyTree, updates: PyTree) -> PyTree:
    """params + updates, leaf by leaf (``optax.apply_updates``)."""
    check_same_shapes("updates", updates, params, "params")
    return _map(lambda p, u: p + u, params, updates)


def sgd(learning_rate: float) -> Optimizer:
    """Plain gradient descent: update = -lr g. No state."""
    lr = check_positive("learning_rate", learning_rate)

    def init(params: PyTree) -> tuple[()]:
        return ()

    def update(grads: PyTree, state: tuple[()]) -> tuple[PyTree, tuple[()]]:
        return _map(lambda g: -_dtype_scalar(lr, g) * g, grads), state

    return Optimizer(init, update)


def momentum(learning_rate: float, beta: float = 0.9) -> Optimizer:
    """Heavy-ball momentum, undamped as ``optax.sgd(lr, momentum=beta)``: v <- beta v + g; update = -lr v.

    Under a constant gradient v grows to g / (1 - beta): steps 10x those of SGD at beta = 0.9.
    """
    lr = check_positive("learning_rate", learning_rate)
    beta = check_rate("beta", beta)

    def init(params: PyTree) -> MomentumState:
        return MomentumState(_zeros(params))

    def update(grads: PyTree, state: MomentumState) -> tuple[PyTree, MomentumState]:
        check_same_shapes("grads", grads, state.velocity, "the momentum state")
        velocity = _map(lambda g, v: g + _dtype_scalar(beta, g) * v, grads, state.velocity)
        return _map(lambda v: -_dtype_scalar(lr, v) * v, velocity), MomentumState(velocity)

    return Optimizer(init, update)


def rmsprop(learning_rate: float, decay: float = 0.9, eps: float = 1e-8, *, eps_in_sqrt: bool = True) -> Optimizer:
    """RMSprop as ``optax.rmsprop`` (defaults included): nu <- decay nu + (1 - decay) g^2 from 0;
    update = -lr g / sqrt(nu + eps), or -lr g / (sqrt(nu) + eps) with ``eps_in_sqrt=False`` (PyTorch's form).

    Dividing by the root-mean-square of recent gradients gives every parameter a step of about lr, whatever the
    scale of its gradient.
    """
    lr = check_positive("learning_rate", learning_rate)
    decay = check_rate("decay", decay)
    eps = check_positive("eps", eps)

    def init(params: PyTree) -> RMSpropState:
        return RMSpropState(_zeros(params))

    def scale(g: np.ndarray, nu: np.ndarray) -> np.ndarray:
        denominator = np.sqrt(nu + _dtype_scalar(eps, g)) if eps_in_sqrt else np.sqrt(nu) + _dtype_scalar(eps, g)
        return -_dtype_scalar(lr, g) * (g / denominator)

    def update(grads: PyTree, state: RMSpropState) -> tuple[PyTree, RMSpropState]:
        check_same_shapes("grads", grads, state.nu, "the RMSprop state")
        nu = _map(lambda g, n: _dtype_scalar(1 - decay, g) * (g * g) + _dtype_scalar(decay, g) * n, grads, state.nu)
        return _map(scale, grads, nu), RMSpropState(nu)

    return Optimizer(init, update)


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam as ``optax.adam``: moving averages of g and g^2, each divided by (1 - beta^t) to undo their start at
    zero (without it the first steps would be about (1 - b1) / sqrt(1 - b2) ~ 3x too large), then
    update = -lr m_hat / (sqrt(nu_hat) + eps)."""
    lr = check_positive("learning_rate", learning_rate)
    b1, b2 = check_rate("b1", b1), check_rate("b2", b2)
    eps = check_positive("eps", eps)

    def init(params: PyTree) -> AdamState:
        return AdamState(0, _zeros(params), _zeros(params))

    def update(grads: PyTree, state: AdamState) -> tuple[PyTree, AdamState]:
        check_same_shapes("grads", grads, state.mu, "the Adam state")
        t = state.count + 1
        mu = _map(lambda g, m: _dtype_scalar(1 - b1, g) * g + _dtype_scalar(b1, g) * m, grads, state.mu)
        nu = _map(lambda g, n: _dtype_scalar(1 - b2, g) * (g * g) + _dtype_scalar(b2, g) * n, grads, state.nu)

        def step(m: np.ndarray, n: np.ndarray) -> np.ndarray:
            m_hat = m / (1 - _dtype_scalar(b1, m) ** t)  # bias correction: m started at 0, not at the mean of g
            n_hat = n / (1 - _dtype_scalar(b2, n) ** t)
            return -_dtype_scalar(lr, m) * (m_hat / (np.sqrt(n_hat) + _dtype_scalar(eps, m)))

        return _map(step, mu, nu), AdamState(t, mu, nu)

    return Optimizer(init, update)
