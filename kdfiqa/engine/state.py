"""``TrainState``: everything a resumed run restores besides the weights, optimiser, schedule, grad
scaler and EMA, as one object that round-trips through a checkpoint's ``"trainer"`` entry.

Format of the ``"trainer"`` entry
---------------------------------
A checkpoint (:mod:`kdfiqa.checkpoint`) written by the :class:`~kdfiqa.engine.Trainer` stores
:meth:`TrainState.state_dict` under ``"trainer"``: a ``dict`` of tensors and plain values only
(``torch.load(weights_only=True)``-safe) with these keys, every one required to resume:

``epoch``           int: epochs completed (equal to the checkpoint's top-level ``"epoch"``).
``step``            int: optimiser steps taken (equal to the checkpoint's top-level ``"step"``).
``batch_in_epoch``  int: batches of epoch ``epoch`` already trained; 0 at an epoch boundary.
``epoch_rng``       RNG states (:func:`kdfiqa.engine.rng.rng_state`) at the start of the current
                    epoch on rank 0, or None before the first epoch.
``epoch_terms``     ``{term: float}``: the current epoch's logged loss terms summed over its
                    batches so far, over every rank.
``epoch_batches``   int: the number of (rank-)batches in those sums.
``stopped_early``   bool: a callback ended training early.
``history``         list of the per-epoch records so far (as in ``log.jsonl``).
``world_size``      int: the number of processes that wrote the file.
``rank_rng``        list, one ``{"epoch": RNG states at epoch start, "now": RNG states now}`` per
                    rank, so every rank resumes its own random streams.
``objective``       ``{name: tensor}``: parameters and buffers of the objective's trainable
                    modules outside its ``.model`` (e.g. distillation projectors), named as in
                    the objective's trainable module (see :mod:`kdfiqa.distill.objective`).

:meth:`TrainState.load_state_dict` checks every field's presence and type and raises a one-line
:class:`~kdfiqa.errors.CheckpointError` naming the file and the field. Files written before
``epoch``, ``step`` and the single-process ``rank_rng`` were part of the entry are read by
:meth:`TrainState.from_checkpoint`, which takes them from the checkpoint's top-level keys.

Callbacks keep their own resumable state (the best metric, early stopping's count), saved beside this
entry under the checkpoint's ``"callbacks"`` (:mod:`kdfiqa.engine.callbacks`). Files written before
that kept ``best_metric`` and ``bad_epochs`` here: this entry ignores them, and
:func:`kdfiqa.engine.callbacks.legacy_states` gives them to the callbacks.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from .rng import rng_state
from ..errors import CheckpointError
from .distributed import DistContext, all_gather_objects

__all__ = ["TrainState", "objective_state", "load_objective_state"]

_RNG_KEYS = frozenset({"torch", "cuda", "numpy", "python"})


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rng(value: Any) -> bool:
    return isinstance(value, Mapping) and _RNG_KEYS <= set(value)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _dict_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, Mapping) and all(
        isinstance(k, str) and check(v) for k, v in value.items()
    )


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, (list, tuple)) and all(check(v) for v in value)


def _streams(value: Any) -> bool:
    return isinstance(value, Mapping) and _rng(value.get("epoch")) and _rng(value.get("now"))


def _field(default: Any, check: Callable[[Any], bool], expected: str) -> Any:
    """A TrainState field with the check :meth:`TrainState.load_state_dict` applies to it."""
    kind = "default_factory" if callable(default) else "default"
    return dataclasses.field(**{kind: default}, metadata={"check": check, "expected": expected})


@dataclass
class TrainState:
    """Where a run stands: its position, running epoch sums, whether a callback stopped it, history
    and random streams (see the module docstring for each field).

    The Trainer keeps this rank's view in ``trainer.state``. :meth:`gathered` is what a checkpoint
    stores (every rank's streams and sums) and :meth:`for_rank` turns a loaded state back into one
    rank's view.
    """

    epoch: int = _field(0, _count, "an integer >= 0")
    step: int = _field(0, _count, "an integer >= 0")
    batch_in_epoch: int = _field(0, _count, "an integer >= 0")
    epoch_rng: dict[str, Any] | None = _field(None, _optional(_rng), "RNG states (a dict) or None")
    epoch_terms: dict[str, float] = _field(dict, _dict_of(_number), "a dict of loss-term sums")
    epoch_batches: int = _field(0, _count, "an integer >= 0")
    stopped_early: bool = _field(False, lambda v: isinstance(v, bool), "a bool")
    history: list[dict[str, Any]] = _field(list, _list_of(lambda r: isinstance(r, Mapping)),
                                           "a list of epoch records (dicts)")
    world_size: int = _field(1, lambda v: _count(v) and v >= 1, "an integer >= 1")
    rank_rng: list[dict[str, Any]] = _field(list, _list_of(_streams),
                                            'a list of {"epoch", "now"} RNG states, one per rank')
    objective: dict[str, Tensor] = _field(dict, _dict_of(lambda v: isinstance(v, Tensor)),
                                          "a dict of tensors")

    def state_dict(self) -> dict[str, Any]:
        """Every field as plain values and tensors: the checkpoint's ``"trainer"`` entry."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_rng": self.epoch_rng,
            "epoch_terms": dict(self.epoch_terms),
            "epoch_batches": self.epoch_batches,
            "stopped_early": self.stopped_early,
            "history": [dict(r) for r in self.history],
            "world_size": self.world_size,
            "rank_rng": list(self.rank_rng),
            "objective": dict(self.objective),
        }

    def load_state_dict(self, state: Mapping[str, Any], source: str = "checkpoint") -> None:
        """Set every field from ``state`` (as :meth:`state_dict` returns it).

        A missing or mistyped field raises a one-line :class:`~kdfiqa.errors.CheckpointError`
        naming ``source`` (the checkpoint's path) and the field; nothing is changed then.
        """
        values = {}
        for spec in dataclasses.fields(self):
            if spec.name not in state:
                raise CheckpointError(
                    f"{source}: its training state has no field 'trainer.{spec.name}', so it cannot "
                    "resume a run; start a new run from its weights instead"
                )
            value = state[spec.name]
            if not spec.metadata["check"](value):
                raise CheckpointError(
                    f"{source}: training state field 'trainer.{spec.name}' is "
                    f"{_describe(value)}, expected {spec.metadata['expected']}; the file is damaged: "
                    "resume from another copy (last.pt / best.pt) or start a new run"
                )
            values[spec.name] = value
        if len(values["rank_rng"]) != values["world_size"]:
            raise CheckpointError(
                f"{source}: training state field 'trainer.rank_rng' holds {len(values['rank_rng'])} "
                f"ranks' streams for world_size {values['world_size']}; the file is damaged: resume "
                "from another copy (last.pt / best.pt) or start a new run"
            )
        values["epoch_terms"] = {k: float(v) for k, v in values["epoch_terms"].items()}
        values["history"] = [dict(r) for r in values["history"]]
        values["rank_rng"] = [dict(r) for r in values["rank_rng"]]
        values["objective"] = dict(values["objective"])
        for name, value in values.items():
            setattr(self, name, value)

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any], path: str | os.PathLike[str]) -> "TrainState":
        """The state in a loaded checkpoint's ``"trainer"`` entry (see the module docstring).

        A checkpoint without one (weights only) raises :class:`~kdfiqa.errors.CheckpointError`.
        """
        entry = ckpt.get("trainer")
        if not isinstance(entry, Mapping):
            raise CheckpointError(
                f"{path}: holds weights only (no training state) and cannot resume a run; start a "
                "new run from it instead"
            )
        # Files written before TrainState kept epoch and step at the top level only, and no
        # rank_rng in one process (the checkpoint's "rng" was that process's stream).
        entry = {"epoch": ckpt.get("epoch"), "step": ckpt.get("step"), **entry}
        if not entry.get("rank_rng") and entry.get("world_size") == 1:
            entry["rank_rng"] = [{"epoch": entry.get("epoch_rng"), "now": ckpt.get("rng")}]
        state = cls()
        state.load_state_dict(entry, source=str(path))
        return state

    def start_epoch(self) -> None:
        """Begin a fresh epoch: capture the RNG states its data order replays from, zero its sums."""
        self.epoch_rng = rng_state()
        self.epoch_terms, self.epoch_batches = {}, 0

    def add_batch(self, terms: Mapping[str, float]) -> None:
        """Count one trained batch and add its logged terms to the epoch's sums."""
        for name, value in terms.items():
            self.epoch_terms[name] = self.epoch_terms.get(name, 0.0) + value
        self.epoch_batches += 1

    def epoch_means(self, ctx: DistContext) -> dict[str, float]:
        """The epoch's logged terms averaged over every rank's batches (a collective)."""
        parts = all_gather_objects((self.epoch_terms, self.epoch_batches), ctx)
        count = sum(n for _, n in parts)
        return {k: v / max(count, 1) for k, v in _summed([t for t, _ in parts]).items()}

    def gathered(self, ctx: DistContext, objective: Mapping[str, Tensor]) -> "TrainState":
        """The state a checkpoint stores: every rank's RNG streams (captured now) and epoch sums,
        and the objective's trainable state ``objective``. A collective under ``torchrun``."""
        streams = {"epoch": self.epoch_rng, "now": rng_state()}
        parts = all_gather_objects((streams, self.epoch_terms, self.epoch_batches), ctx)
        return dataclasses.replace(
            self,
            epoch_terms=_summed([t for _, t, _ in parts]),
            epoch_batches=sum(n for _, _, n in parts),
            world_size=ctx.world_size,
            rank_rng=[s for s, _, _ in parts],
            objective=dict(objective),
        )

    def for_rank(self, ctx: DistContext) -> tuple["TrainState", dict[str, Any]]:
        """This rank's view of a loaded state and the RNG states to continue from.

        With the world size the file was written with, each rank gets its own streams; otherwise
        every rank continues rank 0's. The epoch's sums so far go to rank 0 only, so that
        :meth:`epoch_means` counts them once.
        """
        streams = self.rank_rng[ctx.rank if self.world_size == ctx.world_size else 0]
        local = dataclasses.replace(
            self,
            epoch_rng=streams["epoch"],
            epoch_terms=dict(self.epoch_terms) if ctx.is_main else {},
            epoch_batches=self.epoch_batches if ctx.is_main else 0,
        )
        return local, streams["now"]


def _summed(parts: list[Mapping[str, float]]) -> dict[str, float]:
    names = list(dict.fromkeys(k for part in parts for k in part))
    return {k: sum(part.get(k, 0.0) for part in parts) for k in names}


def _describe(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def objective_state(trainable: nn.Module, model: nn.Module) -> dict[str, Tensor]:
    """Parameters and buffers of the modules of ``trainable`` outside ``model`` that own trainable
    parameters (projectors and the like), detached: the ``"objective"`` field. Frozen modules and
    the model itself (saved as the checkpoint's ``"state_dict"``) are left out."""
    inside = {id(m) for m in model.modules()}
    state: dict[str, Tensor] = {}
    for prefix, module in trainable.named_modules():
        if id(module) in inside:
            continue
        own = dict(module.named_parameters(recurse=False))
        if not any(p.requires_grad for p in own.values()):
            continue
        own.update(module.named_buffers(recurse=False))
        for name, tensor in own.items():
            if tensor is not None:
                state[f"{prefix}.{name}" if prefix else name] = tensor.detach()
    return state


@torch.no_grad()
def load_objective_state(trainable: nn.Module, model: nn.Module, state: Mapping[str, Tensor],
                         source: str) -> None:
    """Copy an ``"objective"`` field into ``trainable``; a one-line
    :class:`~kdfiqa.errors.CheckpointError` when it lacks or misshapes some of its tensors."""
    own = objective_state(trainable, model)
    missing = sorted(set(own) - set(state))
    if missing:
        raise CheckpointError(
            f"{source}: lacks this objective's trainable state {missing[:4]}; resume with the "
            "objective (losses, projectors) the run was started with"
        )
    for name, tensor in own.items():
        if tensor.shape != state[name].shape:
            raise CheckpointError(
                f"{source}: objective tensor {name!r} has shape {tuple(state[name].shape)}, this "
                f"objective's has {tuple(tensor.shape)}; resume with the objective the run was "
                "started with"
            )
        tensor.copy_(state[name])
