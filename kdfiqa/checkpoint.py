"""kdfiqa checkpoints: a documented, pickle-free file format, atomic writes and safe loading.

Rebuilding the model a file holds is :func:`kdfiqa.models.rebuild.load_model`; the RNG states it stores
are :mod:`kdfiqa.engine.rng`'s.

Format
------
A checkpoint is a ``dict`` holding only tensors and plain values (``dict``, ``list``, ``tuple``,
``str``, ``int``, ``float``, ``bool``, ``None``), so that it loads with
``torch.load(..., weights_only=True)`` and never runs code from the file. Keys:

``format``          :data:`FORMAT`, the tag this module reads.
``kdfiqa_version``  the kdfiqa release that wrote the file.
``model``           ``{"name": registry name or None, "kwargs": {...}, "deploy": {...}}``:
                    ``kdfiqa.models.create_model(name, **kwargs)`` rebuilds the network (only the
                    kwargs :func:`kdfiqa.models.restorable_kwargs` allows are replayed);
                    ``deploy`` is its :class:`~kdfiqa.models.deploy.DeployConfig` as
                    ``to_dict()`` (input size, evaluation transform, normalisation, output kind),
                    which :func:`~kdfiqa.models.rebuild.load_model` puts back on the rebuilt model. Files written before
                    ``deploy`` existed get the rebuilt model's own config, at the ``config``'s
                    ``model.input`` size with its ``data.eval_transform`` where it has them.
``state_dict``      the trained model's weights (only the model: no teacher, no projector).
``optimizer``       ``optimizer.state_dict()`` or None.
``scheduler``       the learning-rate schedule's ``state_dict()`` or None.
``scaler``          the AMP grad scaler's ``state_dict()`` or None.
``ema``             the weight moving average's ``state_dict()`` or None
                    (``{"decay", "updates", "state_dict"}``, see :mod:`kdfiqa.engine.ema`).
``epoch``           epochs completed before the position the file was written at.
``step``            optimiser steps taken since the start of training.
``rng``             torch (CPU and CUDA), numpy and Python RNG states, see :func:`kdfiqa.engine.rng.rng_state`.
``config``          the resolved run configuration as a plain dict.
``metrics``         the latest validation metrics (``{}`` when none yet).

Writers may add further plain keys: the Trainer stores its resumable state under ``"trainer"``
(its format is :mod:`kdfiqa.engine.state`'s). Files are written atomically
(:mod:`kdfiqa.atomic_write`): a temporary file in the same folder is written, flushed to disk and
renamed over the target, so a process killed during a save leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

import torch
from torch import nn

from . import __version__
from .atomic_write import atomic_open
from .engine.rng import rng_state
from .errors import CheckpointError, first_line, named_first_line, spelled
from .models.deploy import deploy_config

__all__ = [
    "FORMAT",
    "build_checkpoint",
    "describe_model",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "fill_weights",
    "checkpoint_summary",
]

FORMAT = "kdfiqa.checkpoint.v1"
"""The format tag written in (and required from) every checkpoint."""

PathLike = Union[str, "os.PathLike[str]"]
_PLAIN = (type(None), bool, int, float, str, torch.Tensor)


def describe_model(model: nn.Module) -> dict[str, Any]:
    """``{"name", "kwargs", "deploy"}``: what rebuilds ``model`` through the registry and how it is
    deployed, from its :func:`~kdfiqa.models.deploy.deploy_config` (``name`` is None for a model
    built by hand)."""
    deploy = deploy_config(model).to_dict()
    return {"name": deploy["name"], "kwargs": deploy["kwargs"], "deploy": deploy}


def build_checkpoint(
    model: nn.Module,
    *,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    ema: Any = None,
    epoch: int = 0,
    step: int = 0,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A checkpoint dict in :data:`FORMAT` for ``model`` and whatever training state is given.

    ``optimizer``, ``scheduler``, ``scaler`` and ``ema`` are objects with ``state_dict()``; the
    current RNG states are captured. ``extra`` adds further plain keys.
    """

    def state(obj: Any) -> Any:
        return None if obj is None else obj.state_dict()

    return {
        "format": FORMAT,
        "kdfiqa_version": __version__,
        "model": describe_model(model),
        "state_dict": model.state_dict(),
        "optimizer": state(optimizer),
        "scheduler": state(scheduler),
        "scaler": state(scaler),
        "ema": state(ema),
        "epoch": int(epoch),
        "step": int(step),
        "rng": rng_state(),
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        **extra,
    }


def _check_plain(obj: Any, where: str) -> None:
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint entry {where} has a key of type {type(key).__name__}")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint entry {where} is a {type(obj).__name__}; checkpoints hold only tensors and "
        "plain values (convert it first)"
    )


def save_checkpoint(path: PathLike, ckpt: Mapping[str, Any]) -> Path:
    """Write ``ckpt`` to ``path`` atomically and return the path.

    The dict is checked to hold only tensors and plain values, then written with
    :func:`kdfiqa.atomic_write.atomic_open`: to a temporary file in the same folder, flushed and
    fsync'ed, then renamed over ``path``: a reader (or a process killed mid-save) sees either the
    old file or the complete new one, never a mix.
    """
    if ckpt.get("format") != FORMAT:
        raise TypeError(f"save_checkpoint expects a dict from build_checkpoint (format {FORMAT!r})")
    _check_plain(ckpt, "ckpt")
    path = Path(path)
    try:
        with atomic_open(path, "wb") as f:
            torch.save(dict(ckpt), f)
    except (OSError, RuntimeError) as exc:  # a full disk, a file-size limit, the zip writer's enforce failure
        raise CheckpointError(
            f"{path}: could not be written ({type(exc).__name__}: {first_line(exc)}); free disk space, raise "
            f"the file-size limit or choose another {spelled('--out', 'train.output_dir')}; the previous file at this path is intact") from None
    return path


def _read(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file (check the path)")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file; give the path of a .pt checkpoint")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise CheckpointError(f"{path}: is empty (0 bytes), a truncated save; use another copy (last.pt / "
                              "best.pt) or re-run training")
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch's zip format, a legacy pickle
        raise CheckpointError(f"{path}: is not a PyTorch checkpoint (it starts with {head!r}); give a .pt file "
                              "written by kdfiqa or torch.save")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. an odd pickle protocol in a damaged file
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc).lower() and "weights only" not in str(exc).lower():
            raise CheckpointError(f"{path}: corrupt checkpoint ({named_first_line(exc)})") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it references {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused to load: the file carries pickled Python objects{what}; kdfiqa only "
            "loads tensors and plain values (weights_only=True): use a checkpoint written by kdfiqa"
        ) from None
    except Exception as exc:  # damaged bytes make the restricted unpickler fail in many ways
        if "TorchScript" in str(exc):
            raise CheckpointError(f"{path}: is a TorchScript export (load it with torch.jit.load to deploy it); "
                                  "kdfiqa commands take the checkpoint it was exported from (best.pt / last.pt)"
                                  ) from None
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({named_first_line(exc)}); use another copy "
            "(last.pt / best.pt) or re-run training"
        ) from None


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Read a kdfiqa checkpoint with ``torch.load(weights_only=True, map_location="cpu")``.

    Every failure is a :class:`~kdfiqa.errors.CheckpointError` with one line naming the file and
    the fault: missing, corrupt or truncated, carrying pickled objects (which are never executed),
    not a kdfiqa checkpoint (e.g. a bare ``state_dict``), or written in an unknown format.
    """
    path = Path(path)
    ckpt = _read(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path}: not a kdfiqa checkpoint (it holds a {type(ckpt).__name__}, not a dict)"
        )
    if "format" not in ckpt:
        tensors = sum(isinstance(v, torch.Tensor) for v in ckpt.values())
        kind = (
            f"a bare state_dict of {tensors} tensors; load it with model.load_state_dict"
            if tensors and tensors == len(ckpt)
            else f"a dict with keys {sorted(map(str, ckpt))[:6]}"
        )
        raise CheckpointError(f"{path}: not a kdfiqa checkpoint (no 'format' tag: {kind})")
    if ckpt["format"] != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt['format']!r} (written by kdfiqa "
            f"{ckpt.get('kdfiqa_version', '?')}) is not readable by kdfiqa {__version__}, which reads "
            f"{FORMAT!r}; use the kdfiqa release that wrote it"
        )
    missing = [key for key in ("model", "state_dict", "epoch", "step") if key not in ckpt]
    if not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        missing = missing or ["model description or state_dict"]
    if missing:
        raise CheckpointError(f"{path}: incomplete kdfiqa checkpoint (no {', '.join(missing)})")
    return ckpt


def checkpoint_summary(path: Path, ckpt: Mapping[str, Any]) -> str:
    spec = ckpt["model"]
    kwargs = f" {spec['kwargs']}" if spec.get("kwargs") else ""
    return (
        f"{path} holds model {spec.get('name')!r}{kwargs} (kdfiqa {ckpt.get('kdfiqa_version', '?')}, "
        f"epoch {ckpt.get('epoch')}, step {ckpt.get('step')})"
    )


def _weights(ckpt: Mapping[str, Any], weights: str) -> Mapping[str, torch.Tensor]:
    if weights not in ("auto", "model", "ema"):
        raise ValueError(f"weights must be 'auto', 'model' or 'ema', not {weights!r}")
    ema = ckpt.get("ema")
    if weights == "ema" and not ema:
        raise CheckpointError("the checkpoint has no EMA weights; load weights='model'")
    if weights == "ema" or (weights == "auto" and ema):
        return ema["state_dict"]
    return ckpt["state_dict"]


def fill_weights(model: nn.Module, path: Path, ckpt: Mapping[str, Any], weights: str) -> None:
    try:
        model.load_state_dict(_weights(ckpt, weights), strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{checkpoint_summary(path, ckpt)}: its weights do not fit ({detail})") from None


def load_weights(
    model: nn.Module,
    path: PathLike,
    *,
    weights: Literal["auto", "model", "ema"] = "auto",
) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model`` (strictly) and return the checkpoint.

    ``weights="auto"`` takes the EMA weights when the checkpoint has them (they are the ones that
    were validated and selected) and the trained weights otherwise. A checkpoint for another model
    raises a :class:`~kdfiqa.errors.CheckpointError` saying which model the file holds. The model
    keeps its own deploy config (:func:`load_model` restores the file's).
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    name = deploy_config(model).name
    held = ckpt["model"].get("name")
    if name is not None and held is not None and name != held:
        raise CheckpointError(f"{checkpoint_summary(path, ckpt)}, not {name!r}; pass a matching model")
    fill_weights(model, path, ckpt, weights)
    return ckpt
