"""A sweep's run folder: the stacked training state checkpointed, per-member histories, an exact resume.

    DIR/config.json              the shared fit configuration, the members, the model, the environment
    DIR/checkpoints/<epoch>/     Orbax checkpoints of every member's state, early stopping and best weights, with
                                 every member's history so far (<epoch>: the furthest member's epochs)
    DIR/sweep.csv, curves.png    the table and the curves of a finished sweep
    DIR/members/<k>/             member k's weights.safetensors (dlfund.load_model reads it) and history.csv
    DIR/result.json              written last: a folder with it holds a finished sweep

Checkpoints are written every ``checkpoint_every`` epochs (the compiled calls end there) and at the end; a sweep
resumed from one continues bit for bit as if it had not stopped (the same programs see the same carry).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from dlfund import io as io_lib
from dlfund.checkpoint import CheckpointStore
from dlfund.history import History
from dlfund.train.run import CHECKPOINTS, CONFIG_FILE, RESULT_FILE, _comparable, _plain, differing_keys, environment


def _compared(config: dict[str, Any]) -> dict[str, Any]:
    """What a resume must match: not how epochs run or where the members sit (per machine)."""
    return {k: v for k, v in _comparable(config).items() if k != "member_devices"}


def _items(loops) -> dict[str, Any]:
    """The arrays of the stacked loop state, as checkpoint items (PRNG keys as their raw data)."""
    state = loops.state
    items: dict[str, Any] = {
        "training": {
            "params": state.params,
            "model_state": state.model_state,
            "opt_state": state.opt_state,
            "step": state.step,
            "key": jax.random.key_data(state.key),
        },
        "loop": {"epoch": loops.epoch, "stopped": loops.stopped, "halted": loops.halted},
    }
    if loops.stopper is not None:
        items["loop"]["stopper"] = loops.stopper._asdict()
    if loops.best is not None:
        items["best"] = {"params": loops.best[0], "model_state": loops.best[1]}
    return items


def _restored(loops, items: dict[str, Any]):
    training, loop = items["training"], items["loop"]
    state = loops.state.replace(
        params=training["params"],
        model_state=training["model_state"],
        opt_state=training["opt_state"],
        step=training["step"],
        key=jax.random.wrap_key_data(training["key"], impl=jax.random.key_impl(loops.state.key)),
    )
    stopper = loops.stopper if loops.stopper is None else type(loops.stopper)(**loop["stopper"])
    best = loops.best if "best" not in items else (items["best"]["params"], items["best"]["model_state"])
    return loops._replace(
        state=state, stopper=stopper, best=best, epoch=loop["epoch"], stopped=loop["stopped"], halted=loop["halted"]
    )


class SweepRecorder:
    """Writes a sweep's run folder while :func:`dlfund.sweep` trains, and restores a sweep from it.

    Args:
      run_dir: the folder.
      config: the JSON-friendly configuration (shared options and members): a resume must match it.
      extra: more to record in ``config.json`` (model description, ``run_info``).
      resume: continue from the newest usable checkpoint instead of starting (a folder holding a sweep is
        refused without it).
      checkpoint_every: save every this many epochs, and at the end.
      keep: how many of the latest checkpoints to keep.
    """

    def __init__(self, run_dir, *, config, extra, resume: bool, checkpoint_every: int, keep: int):
        self.run_dir = Path(run_dir)
        self.config, self.extra, self.resume = config, extra, resume
        self.checkpoint_every, self.keep = checkpoint_every, keep
        self.store: CheckpointStore | None = None

    def start(self, loops) -> tuple[Any, list[History], dict[int, str]]:
        """Opens the folder; returns ``(loops, histories, halt_reasons)``: the given ones for a new sweep, the
        newest checkpoint's for a resumed one."""
        config_path = self.run_dir / CONFIG_FILE
        holds_sweep = config_path.exists() or (self.run_dir / CHECKPOINTS).exists()
        if holds_sweep and not self.resume:
            raise ValueError(f"{self.run_dir} already holds a run; pass resume=True to continue it, or a new run_dir")
        if self.resume and config_path.exists():
            recorded = json.loads(config_path.read_text())
            saved = {"sweep": _compared(recorded.get("sweep", {})), "model": recorded.get("model")}
            current = {"sweep": _compared(_plain(self.config)), "model": _plain(self.extra.get("model"))}
            differ = differing_keys(saved, current)
            if differ:
                raise ValueError(
                    f"cannot resume {self.run_dir}: its sweep was configured differently ({', '.join(differ)}); "
                    "resume with the same members and options, or start a new run_dir"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.store = CheckpointStore(self.run_dir / CHECKPOINTS, keep=self.keep)
        histories = [History() for _ in self.config["members"]]
        halt_reasons: dict[int, str] = {}
        restored = self.store.restore_latest(_items(loops)) if self.resume else None
        if restored is not None:
            _, items, meta = restored
            loops = _restored(loops, items)
            histories = [History(rows) for rows in meta["histories"]]
            halt_reasons = {int(k): v for k, v in meta["halt_reasons"].items()}
        if not config_path.exists():
            io_lib.write_json(config_path, {"sweep": self.config, **self.extra, "environment": environment()})
        return loops, histories, halt_reasons

    def checkpoint(self, epoch: int, loops, histories: list[History], halt_reasons: dict[int, str]) -> None:
        """Saves checkpoint ``epoch`` (the furthest member's epochs) with every member's history so far."""
        meta = {"histories": [h.rows for h in histories], "halt_reasons": {str(k): v for k, v in halt_reasons.items()}}
        self.store.save(epoch, _items(loops), meta)

    def finish(self, result) -> None:
        """Writes the finished sweep: table, curves, each member's weights and history; ``result.json`` last."""
        from dlfund.weights import save_weights

        self.store.wait()
        result.to_csv(self.run_dir / "sweep.csv")
        figure = result.plot()
        io_lib.write_with(self.run_dir / "curves.png", lambda f: figure.savefig(f, format="png", dpi=110))
        for k in range(len(result)):
            member_dir = self.run_dir / "members" / str(k)
            member_dir.mkdir(parents=True, exist_ok=True)
            save_weights(member_dir / "weights.safetensors", result.model(k))
            result.histories[k].to_csv(member_dir / "history.csv")
        outcome = {
            "members": result.members,
            "epochs_run": [len(h) for h in result.histories],
            "best_epochs": result.best_epochs,
            "stop_reasons": result.stop_reasons,
            "best_member": result._best_or_none(),
        }
        io_lib.write_json(self.run_dir / RESULT_FILE, outcome)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
