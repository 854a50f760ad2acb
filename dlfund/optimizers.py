"""Optimizers (Optax) and learning-rate schedules, by name.

``get("adam", learning_rate=1e-3, schedule="warmup_cosine", total_steps=1000, clip_norm=1.0, weight_decay=1e-4)``
returns an :class:`Optimizer`: a frozen, hashable description whose ``tx`` is the Optax transformation

    clip_by_global_norm(clip_norm)  ->  <optimizer>(learning_rate=schedule)  ->  decoupled weight decay

Weight decay here is always *decoupled* (Loshchilov & Hutter, AdamW): it shrinks weights by
``learning_rate(step) * weight_decay * w`` after the optimizer's own update, so it is not rescaled by Adam's or
RMSprop's gradient statistics. For ``adamw`` that is exactly ``optax.adamw``, with the ``weight_decay`` given
(default 0, with which ``adamw`` is Adam; ``optax.adamw``'s own default is 1e-4). By default it skips biases and
normalization scales (every parameter with fewer than 2 dimensions). For an L2 penalty *added to the loss* instead,
see :mod:`dlfund.regularizers`.

Because an ``Optimizer`` is a value (equal settings compare equal), a second ``fit`` with the same settings reuses
the compiled train step instead of compiling again. The learning rate and weight decay are not compared: they are
arrays in the optimizer state, so a second ``fit`` with another learning rate reuses the compiled step too.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dlfund.registry import Registry

Schedule = Callable[[jax.Array], jax.Array]


# --- schedules --------------------------------------------------------------------------------------------------


def _need_total(name: str, total_steps: int | None) -> int:
    if total_steps is None or total_steps < 1:
        raise ValueError(
            f"schedule {name!r} needs the run length: pass total_steps (dlfund.fit does this for you) "
            "or the schedule's own step counts"
        )
    return int(total_steps)


def constant(learning_rate: float, total_steps: int | None = None) -> Schedule:
    """The same rate at every step."""
    return optax.constant_schedule(learning_rate)


def cosine(
    learning_rate: float,
    total_steps: int | None = None,
    *,
    decay_steps: int | None = None,
    alpha: float = 0.0,
) -> Schedule:
    """Cosine decay from ``learning_rate`` to ``alpha * learning_rate`` over ``decay_steps`` (default: the run)."""
    steps = decay_steps if decay_steps is not None else _need_total("cosine", total_steps)
    return optax.cosine_decay_schedule(learning_rate, steps, alpha=alpha)


def warmup_cosine(
    learning_rate: float,
    total_steps: int | None = None,
    *,
    warmup_steps: int | None = None,
    decay_steps: int | None = None,
    end_value: float = 0.0,
) -> Schedule:
    """Linear warm-up from 0 to ``learning_rate``, then cosine decay to ``end_value``.

    Defaults: warm-up over the first 5% of the run (enough to keep Adam's early, badly estimated second moments
    from taking huge steps), decay until the end of the run.
    """
    if decay_steps is None:
        decay_steps = _need_total("warmup_cosine", total_steps)
    if warmup_steps is None:
        warmup_steps = max(1, decay_steps // 20)
    if not 0 <= warmup_steps < decay_steps:
        raise ValueError(f"warmup_cosine needs 0 <= warmup_steps < decay_steps, got {warmup_steps} and {decay_steps}")
    # optax.warmup_cosine_decay_schedule's formula, written out: optax's own compares its peak in Python, so it
    # cannot take a traced peak (the learning rate lives in the optimizer state, as an array). Computed in float32
    # at run time, it equals optax's to 1e-6 relative (tested), not bit for bit.
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    cosine_steps = decay_steps - warmup_steps

    def decay(count):
        progress = jnp.clip(count / cosine_steps, 0.0, 1.0)
        return end_value + (learning_rate - end_value) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

    return optax.join_schedules([warmup, decay], [warmup_steps])


def exponential(
    learning_rate: float,
    total_steps: int | None = None,
    *,
    decay_rate: float = 0.1,
    transition_steps: int | None = None,
    staircase: bool = False,
) -> Schedule:
    """``learning_rate * decay_rate ** (step / transition_steps)``; by default a tenth of the rate at the end."""
    steps = transition_steps if transition_steps is not None else _need_total("exponential", total_steps)
    return optax.exponential_decay(learning_rate, steps, decay_rate, staircase=staircase)


def step(
    learning_rate: float,
    total_steps: int | None = None,
    *,
    boundaries: tuple[int, ...] | None = None,
    factor: float = 0.1,
) -> Schedule:
    """Piecewise constant: multiply the rate by ``factor`` at each boundary (default: 50% and 75% of the run,
    the classic ImageNet/ResNet recipe). A boundary given twice multiplies twice."""
    if boundaries is None:
        total = _need_total("step", total_steps)
        boundaries = (total // 2, (3 * total) // 4)
    scales: dict[int, float] = {}
    for boundary in boundaries:  # optax takes a dict: a repeated boundary would keep only one of its factors
        scales[int(boundary)] = scales.get(int(boundary), 1.0) * factor
    return optax.piecewise_constant_schedule(learning_rate, scales)


SCHEDULES: Registry[Callable[..., Schedule]] = Registry("schedule")
for _fn in (constant, cosine, warmup_cosine, exponential, step):
    SCHEDULES.register(_fn.__name__, _fn)


# --- decoupled weight decay -------------------------------------------------------------------------------------


def kernels_only(params: Any) -> Any:
    """Default decay mask: True for weight matrices/kernels (ndim >= 2), False for biases and norm scales."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


class DecoupledDecayState(NamedTuple):
    count: jax.Array  # the step, so the decay follows the learning-rate schedule


def decoupled_weight_decay(
    weight_decay: float, schedule: Schedule, mask: Callable[[Any], Any] | None = kernels_only
) -> optax.GradientTransformation:
    """Adds ``-schedule(step) * weight_decay * param`` to the (already learning-rate-scaled) updates."""

    def init(params):
        return DecoupledDecayState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("decoupled weight decay needs the parameters: call tx.update(grads, state, params)")
        rate = schedule(state.count) * weight_decay
        keep = mask(params) if mask is not None else jax.tree.map(lambda _: True, params)
        updates = jax.tree.map(lambda u, p, m: u - rate * p if m else u, updates, params, keep)
        return updates, DecoupledDecayState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


# --- optimizers -------------------------------------------------------------------------------------------------


def _sgd(learning_rate, **options):
    return optax.sgd(learning_rate, **options)


def _momentum(learning_rate, momentum: float = 0.9, **options):
    # 0.9: the textbook heavy-ball value; averages gradients over ~10 steps.
    return optax.sgd(learning_rate, momentum=momentum, **options)


def _nesterov(learning_rate, momentum: float = 0.9, **options):
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True, **options)


_BASE: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": _nesterov,
    "rmsprop": optax.rmsprop,
    "adam": optax.adam,
    "adamw": optax.adamw,
    "adagrad": optax.adagrad,
}
OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry("optimizer")
for _name, _factory in _BASE.items():
    OPTIMIZERS.register(_name, _factory)


def _accepted_options(name: str) -> set[str]:
    factory = OPTIMIZERS.get(name)
    params = set(inspect.signature(factory).parameters)
    if name in ("sgd", "momentum", "nesterov"):
        params |= set(inspect.signature(optax.sgd).parameters)
    if name == "nesterov":
        params.discard("nesterov")  # fixed to True: that is what the name means
    return params - {"learning_rate", "options", "weight_decay", "mask"}


def _check_positive(what: str, value: float) -> None:
    # numbers.Real: NumPy scalars too (a sweep's np.arange), which float() then makes plain.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number (a Python or NumPy int or float), got {value!r}")


#: The peak learning rate of an optimizer given by name when none is given: Adam's published default.
DEFAULT_LEARNING_RATE = 1e-3

#: Hyperparameters that are values in the optimizer state (arrays), not constants of the compiled program.
TRACED = ("learning_rate", "weight_decay")


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """A named Optax optimizer with its schedule, clipping and decoupled weight decay; hashable by value.

    Build it with :func:`get`. ``tx`` is the Optax transformation; ``learning_rate_at(step)`` the scheduled rate.

    The learning rate (the peak of the schedule) and the weight decay are not part of the compiled program: they
    are arrays in the optimizer state (``optax.inject_hyperparams``), and two optimizers that differ only in them
    compare equal. So a second ``fit`` with another learning rate reuses the compiled step, and a sweep can give
    each member its own rate. Whether weights decay at all (``weight_decay > 0``) is part of the program.
    """

    name: str
    learning_rate: float = dataclasses.field(compare=False)
    schedule: str = "constant"
    total_steps: int | None = None
    weight_decay: float = dataclasses.field(default=0.0, compare=False)
    clip_norm: float | None = None
    options: tuple[tuple[str, Any], ...] = ()
    schedule_options: tuple[tuple[str, Any], ...] = ()
    #: whether the program has a weight-decay term: None derives it (``weight_decay > 0``; adamw always has one);
    #: True keeps the term at a weight decay of 0 (a sweep whose members decay by 0 and by more: one program)
    decays: bool | None = None

    def __post_init__(self):
        derived = self.name == "adamw" or self.weight_decay > 0
        if self.decays is False and derived:
            raise ValueError(f"decays=False, but {self.name} with weight_decay={self.weight_decay} decays weights")
        object.__setattr__(self, "decays", bool(self.decays) or derived)

    @property
    def tx(self) -> optax.GradientTransformation:
        """The Optax transformation; its state holds this optimizer's learning rate and weight decay."""
        return optax.inject_hyperparams(functools.partial(_transformation, self))(
            learning_rate=self.learning_rate, weight_decay=self.weight_decay
        )

    def init(self, params: Any) -> Any:
        """``tx.init(params)`` as one compiled program (eagerly it is an operation per leaf, ~8 ms for a small MLP);
        the learning rate and weight decay are its arguments, so every value shares the program."""
        return _init(self, params, jnp.float32(self.learning_rate), jnp.float32(self.weight_decay))

    def learning_rate_at(self, step: jax.Array) -> jax.Array:
        """This optimizer's scheduled rate at ``step`` (host or jit; the rate of a state is :meth:`rate`)."""
        return _schedule(self, self.learning_rate)(step)

    def rate(self, opt_state: Any, step: jax.Array) -> jax.Array:
        """The rate at ``step`` of the learning rate held in ``opt_state`` (inside the compiled step)."""
        return _schedule(self, opt_state.hyperparams["learning_rate"])(step)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (for configs and logs)."""
        return {
            "name": self.name,
            "learning_rate": self.learning_rate,
            "schedule": self.schedule,
            "total_steps": self.total_steps,
            "weight_decay": self.weight_decay,
            "clip_norm": self.clip_norm,
            **{f"option.{k}": v for k, v in self.options},
            **{f"schedule.{k}": v for k, v in self.schedule_options},
        }


@functools.partial(jax.jit, static_argnums=0)
def _init(opt: Optimizer, params: Any, learning_rate: jax.Array, weight_decay: jax.Array) -> Any:
    tx = optax.inject_hyperparams(functools.partial(_transformation, opt))
    return tx(learning_rate=learning_rate, weight_decay=weight_decay).init(params)


def _schedule(opt: Optimizer, peak: Any) -> Schedule:
    """The optimizer's schedule with peak rate ``peak`` (a float, or a traced array)."""
    return SCHEDULES.get(opt.schedule)(peak, opt.total_steps, **dict(opt.schedule_options))


def _transformation(opt: Optimizer, learning_rate: jax.Array, weight_decay: jax.Array) -> optax.GradientTransformation:
    """clip -> optimizer(schedule) -> decoupled decay, for the learning rate and weight decay given (arrays under
    ``inject_hyperparams``, which rebuilds this inside each update from the values in the state)."""
    schedule = _schedule(opt, learning_rate)
    options = dict(opt.options)
    parts = []
    if opt.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(opt.clip_norm))
    if opt.name == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=weight_decay, mask=kernels_only, **options))
    else:
        parts.append(OPTIMIZERS.get(opt.name)(schedule, **options))
        if opt.decays:
            parts.append(decoupled_weight_decay(weight_decay, schedule))
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


@dataclasses.dataclass(frozen=True)
class CustomOptimizer:
    """Wraps a user's own ``optax.GradientTransformation``.

    ``learning_rate`` (a float or an Optax schedule), if given, is only reported in measurements/history; the
    transformation itself decides the real step size.
    """

    transformation: optax.GradientTransformation
    learning_rate: float | Schedule | None = None
    name: str = "custom"

    @property
    def tx(self) -> optax.GradientTransformation:
        return self.transformation

    def rate(self, opt_state: Any, step: jax.Array) -> jax.Array:
        return self.learning_rate_at(step)

    def init(self, params: Any) -> Any:
        return self.transformation.init(params)

    def learning_rate_at(self, step: jax.Array) -> jax.Array:
        if self.learning_rate is None:
            return jnp.asarray(jnp.nan, jnp.float32)
        if callable(self.learning_rate):
            return jnp.asarray(self.learning_rate(step), jnp.float32)
        return jnp.asarray(self.learning_rate, jnp.float32)

    def describe(self) -> dict[str, Any]:
        lr = self.learning_rate if isinstance(self.learning_rate, (int, float)) else None
        return {"name": self.name, "learning_rate": lr}


def get(
    optimizer: str | Optimizer | CustomOptimizer | optax.GradientTransformation = "adam",
    *,
    learning_rate: float | None = None,
    schedule: str = "constant",
    total_steps: int | None = None,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    schedule_options: dict[str, Any] | None = None,
    **options: Any,
) -> Optimizer | CustomOptimizer:
    """Builds an optimizer description; validates every setting before anything is traced.

    Args:
      optimizer: a name (sgd, momentum, nesterov, rmsprop, adam, adamw, adagrad), an ``Optimizer`` (returned with
        ``total_steps`` filled in if it had none) or an ``optax.GradientTransformation`` (wrapped as is).
      learning_rate: the peak rate, > 0; None: 1e-3 (Adam's published default) for an optimizer given by name. An
        Optax transformation carries its own rate: this value is then only what the history reports, and None
        reports NaN (rather than a rate the run never used).
      schedule: constant, cosine, warmup_cosine, exponential or step (see each function's docstring).
      total_steps: the run length in optimizer steps, for schedules that decay over the run.
      weight_decay: decoupled weight decay coefficient (>= 0), skipping biases and normalization scales.
      clip_norm: clip the global gradient norm to this value before the update (None: no clipping).
      schedule_options: keyword arguments of the schedule (e.g. ``{"warmup_steps": 100}``).
      **options: keyword arguments of the Optax optimizer (e.g. ``momentum=0.95``, ``b1=0.8``).
    Raises:
      ValueError: unknown optimizer/schedule/option name (listing the valid ones) or an out-of-range value.
    """
    if isinstance(optimizer, Optimizer):
        if optimizer.total_steps is None and total_steps is not None and optimizer.schedule != "constant":
            optimizer = dataclasses.replace(optimizer, total_steps=int(total_steps))
        _validate(optimizer)
        return optimizer
    if isinstance(optimizer, CustomOptimizer):
        return optimizer
    if isinstance(optimizer, optax.GradientTransformation):
        return CustomOptimizer(optimizer, learning_rate)
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a name, an Optimizer or an optax transformation, got {optimizer!r}")
    OPTIMIZERS.get(optimizer)  # an unknown name fails here, listing the known ones
    name = optimizer.strip().lower().replace("-", "_")
    if learning_rate is None:
        learning_rate = DEFAULT_LEARNING_RATE
    _check_positive("learning_rate", learning_rate)
    SCHEDULES.get(schedule)
    if (
        isinstance(weight_decay, bool)
        or not isinstance(weight_decay, numbers.Real)
        or math.isnan(weight_decay)
        or weight_decay < 0
    ):
        raise ValueError(f"weight_decay must be a number >= 0 (a Python or NumPy int or float), got {weight_decay!r}")
    if clip_norm is not None:
        _check_positive("clip_norm", clip_norm)
    unknown = set(options) - _accepted_options(name)
    if unknown:
        raise ValueError(
            f"optimizer {name!r} does not take {sorted(unknown)}; its options are {sorted(_accepted_options(name))}"
        )
    # A constant rate does not depend on the run length; forgetting it keeps equal settings equal, so runs of
    # different lengths share one compiled step.
    if schedule.strip().lower() == "constant":
        total_steps = None
    opt = Optimizer(
        name=name,
        learning_rate=float(learning_rate),
        schedule=schedule.strip().lower(),
        total_steps=None if total_steps is None else int(total_steps),
        weight_decay=float(weight_decay),
        clip_norm=None if clip_norm is None else float(clip_norm),
        options=tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items())),
        # Lists (e.g. step boundaries from a config file) become tuples: the Optimizer must stay hashable.
        schedule_options=tuple(
            sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in (schedule_options or {}).items())
        ),
    )
    try:  # the schedule first, alone: a TypeError there is a schedule option it does not take
        opt.learning_rate_at(0)
    except TypeError as error:
        raise ValueError(f"schedule {opt.schedule!r}: {error}") from None
    try:  # then the whole transformation: a TypeError now is one of the optimizer's options
        _validate(opt)
    except TypeError as error:
        raise ValueError(f"optimizer {name!r}: {error}") from None
    return opt


def _validate(opt: Optimizer) -> None:
    """Builds the transformation and evaluates the schedule once, so a bad option fails now, not inside a trace."""
    _transformation(opt, opt.learning_rate, opt.weight_decay)
    opt.learning_rate_at(0)
