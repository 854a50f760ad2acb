"""The training state: everything that changes during training, as one pytree.

A :class:`TrainState` holds the model split by ``nnx.split`` into its trainable parameters and the rest of its
state (batch-norm statistics, ...), the optimizer state, the step counter and a PRNG key. Its static fields (the
graph definition, the optimizer, the objective) are values that compare by content, so equal configurations share
compiled programs, and the whole state can be stacked (``vmap`` over seeds), sharded and checkpointed like any pytree.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from dlfund import losses as losses_lib
from dlfund import optimizers as optimizers_lib
from dlfund import regularizers as regularizers_lib
from dlfund.train import freezing as freezing_lib
from dlfund.train import precision as precision_lib

_STALE_HYPER = (
    "the train state's hyper does not hold this objective's amounts; after state.replace(objective=new), also pass "
    "hyper=new.hyperparameters() (the objective compares without its amounts, which live in the state)"
)


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the train step minimizes: a per-example loss averaged over the batch, plus penalties on the params.

    Attributes:
      loss: the :class:`dlfund.losses.Loss`.
      penalties: regularization penalties (:mod:`dlfund.regularizers`), summed and added to the mean loss.
    """

    loss: losses_lib.Loss
    penalties: tuple[Any, ...] = ()

    def hyperparameters(self) -> dict[str, Any]:
        """The objective's amounts as float32 arrays, for :attr:`TrainState.hyper`: the penalties' strengths and,
        when on, the label smoothing. The objective compares without them, so they are values of the program."""
        values: dict[str, Any] = {"penalties": tuple(jnp.asarray(p.coefficient, jnp.float32) for p in self.penalties)}
        if self.loss.smoothed:
            values["label_smoothing"] = jnp.asarray(self.loss.label_smoothing, jnp.float32)
        return values

    def data_losses(self, outputs: jax.Array, targets: jax.Array, hyper: dict[str, Any]) -> jax.Array:
        """Per-example losses [B] with the amounts in ``hyper`` (never the static ones: a compiled program is
        shared by objectives that differ only in them)."""
        if self.loss.smoothed and "label_smoothing" not in hyper:
            raise ValueError(_STALE_HYPER)
        return self.loss(outputs, targets, label_smoothing=hyper.get("label_smoothing"))

    def penalty(self, params: Any, hyper: dict[str, Any]) -> jax.Array:
        """The regularization penalty on ``params`` with the strengths in ``hyper``."""
        if len(hyper.get("penalties", ())) != len(self.penalties):
            raise ValueError(_STALE_HYPER)
        return regularizers_lib.total_penalty(self.penalties, params, hyper["penalties"])


@struct.dataclass
class TrainState:
    """All that a train step reads and writes.

    Attributes:
      params: trainable parameters (``nnx.Param`` variables) as an ``nnx.State``.
      model_state: the model's other variables (e.g. batch-norm running statistics).
      opt_state: the Optax optimizer state for ``params``.
      step: int32 scalar, the number of optimizer steps taken.
      key: PRNG key; the step's dropout key is ``fold_in(key, step)``, so it never needs to be split or stored.
      graphdef, optimizer, objective, call_takes_rngs: static configuration (not arrays).
      augment: an on-device augmentation (:mod:`dlfund.data.augment`) applied to training batches inside the step,
        or None.
      hyper: the objective's amounts as arrays (:meth:`Objective.hyperparameters`: penalty strengths, label
        smoothing); with the learning rate and weight decay in ``opt_state``, every traced hyperparameter is in
        the state, so another value does not compile another program, and K stacked states train K settings.
      layout: a :class:`dlfund.train.devices.Layout` (the mesh the state and its batches are split over), or None
        for one device; static, so every program that reads the state is compiled for it.
      accumulate_steps: each optimizer step averages the gradients of this many micro-batches of the batch, one
        micro-batch in memory at a time (1: the whole batch at once).
      precision: "float32", or "bfloat16": the training step computes in bfloat16 on these float32 weights
        (:mod:`dlfund.train.precision`).
      freezing: a :class:`dlfund.train.freezing.Freezing` (the parameters that do not train, the batch-norm layers
        held in inference mode), or None: everything trains. ``params`` holds every parameter; ``opt_state`` only
        the trained ones'.
      rate_scales: per-parameter update factors of ``learning_rates`` (the tree of the trained parameters), or
        None.
    """

    params: nnx.State
    model_state: nnx.State
    opt_state: Any
    step: jax.Array
    key: jax.Array
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    optimizer: Any = struct.field(pytree_node=False)
    objective: Objective = struct.field(pytree_node=False)
    call_takes_rngs: bool = struct.field(pytree_node=False, default=True)
    augment: Any = struct.field(pytree_node=False, default=None)
    hyper: dict[str, Any] = struct.field(default_factory=dict)
    layout: Any = struct.field(pytree_node=False, default=None)
    accumulate_steps: int = struct.field(pytree_node=False, default=1)
    precision: str = struct.field(pytree_node=False, default="float32")
    freezing: Any = struct.field(pytree_node=False, default=None)
    rate_scales: Any = None

    def split_params(self) -> tuple[nnx.State, nnx.State | None]:
        """``(trained, frozen)`` parameters; frozen is None when everything trains."""
        if self.freezing is None:
            return self.params, None
        return self.freezing.split(self.params)

    @staticmethod
    def join_params(trained: nnx.State, frozen: nnx.State | None) -> nnx.State:
        """The inverse of :meth:`split_params`."""
        return trained if frozen is None else nnx.merge_state(trained, frozen)

    def model(self, *, train: bool = False) -> nnx.Module:
        """A module rebuilt from this state (in eval mode unless ``train``); works inside jit. In training with
        ``precision="bfloat16"`` its layers compute in bfloat16 (see :mod:`dlfund.train.precision`)."""
        # copy=True: fresh Variables at the current trace level, so batch norm may update them inside grad/scan.
        module = nnx.merge(self.graphdef, self.params, self.model_state, copy=True)
        module.train() if train else module.eval()
        if train and self.freezing is not None:
            self.freezing.hold_norms(module)
        if train and self.precision != "float32":
            precision_lib.compute_in(module, jnp.bfloat16)
        return module

    def apply(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None):
        """Runs the model on x [B, ...]; returns ``(outputs, new_model_state)`` (batch stats move in training).
        Outputs are float32 whatever the training precision."""
        module = self.model(train=train)
        if train:
            x = precision_lib.to_compute(x, self.precision)
        outputs = module(x, rngs=key) if self.call_takes_rngs else module(x)
        if train:
            outputs = precision_lib.to_float32(outputs)
        _, _, model_state = nnx.split(module, nnx.Param, ...)
        return outputs, model_state

    def data_losses(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        """Per-example losses [B] of the objective, with this state's amounts (label smoothing)."""
        return self.objective.data_losses(outputs, targets, self.hyper)

    @property
    def learning_rate(self) -> jax.Array:
        """The learning rate the next step will use."""
        return self.optimizer.rate(self.opt_state, self.step)


@jax.jit
def copy_arrays(tree: Any) -> Any:
    """A copy of every array in ``tree``, in fresh buffers, so that donating one never invalidates the other.

    One compiled call instead of one dispatch per leaf: ``fit`` copies the trained weights into the user's model and
    the model's weights into its state on every call (~1 ms a call for a two-layer MLP, leaf by leaf, on CPU).
    """
    return jax.tree.map(jnp.copy, tree)


def split_model(model: nnx.Module, *, clone: bool = True) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``(graphdef, params, model_state)`` of a train-mode clone of ``model`` (the arrays are shared, not copied).

    The graph definition then does not depend on the mode the user's model was left in, so a model trained,
    evaluated and trained again reuses the same compiled programs. ``clone=False`` sets ``model`` itself to train
    mode instead (for a model nobody else holds: a sweep's members; a clone costs ~2 ms for a small MLP).
    """
    if clone:
        model = nnx.merge(*nnx.split(model))
    model.train()
    return nnx.split(model, nnx.Param, ...)


def _takes_rngs(module: nnx.Module) -> bool:
    try:
        return "rngs" in inspect.signature(module.__call__).parameters
    except (TypeError, ValueError):
        return False


def create_train_state(
    model: nnx.Module,
    *,
    optimizer: str | Any = "adam",
    learning_rate: float | None = None,
    loss: str | losses_lib.Loss | Any | None = None,
    regularizers: tuple[Any, ...] = (),
    augment: Any = None,
    key: jax.Array,
    copy_model: bool = True,
    layout: Any = None,
    accumulate_steps: int = 1,
    precision: str = "float32",
    freeze: Any = None,
    freeze_batch_norm: bool = True,
    learning_rates: dict[str, float] | None = None,
    **optimizer_options: Any,
) -> TrainState:
    """Builds the :class:`TrainState` for ``model``.

    The model's arrays are copied, so donating the state to a compiled step never invalidates the user's model.

    Args:
      model: an NNX module; if its ``__call__`` takes ``rngs``, it receives the step's dropout key there.
      optimizer: a name, a :class:`dlfund.optimizers.Optimizer` or an Optax transformation.
      learning_rate: passed to :func:`dlfund.optimizers.get` with ``optimizer_options`` (None: 1e-3 for an
        optimizer given by name).
      loss: a name, ``Loss`` or callable; default: the model's ``default_loss`` or softmax cross-entropy.
      regularizers: penalties such as ``"l2:1e-4"`` (see :func:`dlfund.regularizers.get`).
      augment: augmentation specs such as ``("crop:4", "flip")`` (see :func:`dlfund.data.augment.compose`), applied
        to each training batch inside the step; None or ``()``: none.
      key: PRNG key (e.g. ``jax.random.key(0)``); it drives dropout and augmentation.
      copy_model: copy the model's arrays (and leave it in its mode); False hands them over and sets the model
        to train mode: for a model that nothing else uses (a sweep builds one per member and stacks them).
      layout: a :class:`dlfund.train.devices.Layout` to place the state on (see
        :func:`dlfund.train.devices.resolve_layout`); None: one device.
      accumulate_steps: micro-batches per optimizer step (gradient accumulation); each batch's size must divide.
      precision: "float32" or "bfloat16" (the training step's computation; weights stay float32).
      freeze: the parameters that do not train: "backbone", glob patterns of parameter paths or a callable
        ``path -> bool`` (see :mod:`dlfund.train.freezing`); None: all train.
      freeze_batch_norm: batch-norm layers whose parameters are all frozen run in inference mode in training.
      learning_rates: ``{pattern: rate}``, peak learning rates of the matched parameters (the others: the
        optimizer's).
    """
    opt = optimizers_lib.get(optimizer, learning_rate=learning_rate, **optimizer_options)
    freezing = freezing_lib.make_freezing(model, freeze, freeze_batch_norm=freeze_batch_norm)
    rates = freezing_lib.path_rates(model, learning_rates, () if freezing is None else freezing.frozen)
    if rates and not isinstance(opt, optimizers_lib.Optimizer):
        raise ValueError(
            "learning_rates needs a built-in optimizer (by name), whose learning rate it scales; a custom optax "
            "transformation sets its own rates: use optax.multi_transform, or pass the optimizer by name"
        )
    objective = Objective(
        loss=losses_lib.for_model(model, loss),
        penalties=tuple(regularizers_lib.get(r) for r in regularizers),
    )
    graphdef, params, model_state = split_model(model, clone=copy_model)
    if copy_model:
        params, model_state = copy_arrays((params, model_state))
    pipeline = None
    if augment:
        from dlfund.data.augment import compose

        pipeline = compose(augment) or None
    trained = params if freezing is None else freezing.split(params)[0]
    state = TrainState(
        params=params,
        model_state=model_state,
        opt_state=opt.init(trained),
        step=jnp.zeros([], jnp.int32),
        key=key,
        graphdef=graphdef,
        optimizer=opt,
        objective=objective,
        call_takes_rngs=_takes_rngs(model),
        augment=pipeline,
        hyper=objective.hyperparameters(),
        layout=layout,
        accumulate_steps=int(accumulate_steps),
        precision=precision_lib.check_precision(precision),
        freezing=freezing,
        rate_scales=freezing_lib.rate_scales(trained, rates, opt.learning_rate) if rates else None,
    )
    return state if layout is None else layout.place_state(state)
